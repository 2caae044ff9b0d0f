"""Budgets shared by several sluice instances through a real redis-server (issue 10).

Each test starts its own redis-server (redisutil.RedisServer: Debian's, no persistence, a
free port or a unix socket), several daemons sharing one budget `api-budget` on the one
upstream "api" (redisutil.Fleet), and open-loop clients in a subprocess (loadgen.py:
request j of an instance is started at t0 + j / rate on its own connection, whatever
happened to the others). What the upstream receives is measured from its own arrival
times (harness.Request.t), in the same process as the test, which does little else.

The promise checked (the issue's overshoot bound): any window holds at most what one
exact GCRA (rate, burst) allows plus ceil(G / T), G = clamp(T / 2, 1 ms, 20 ms): at 30/s
burst 1, 31 + 1 = 32 in any 1 s. Windows are shrunk by 20 ms for the upstream's own
jitter (it timestamps a request when its event loop reads it). Rates carry the
tolerances of a noisy 2-core machine running three ASan daemons: the issue's 3 % for the
steady rate, 20..36/s while Redis is down (each instance alone paces at 10/s).
"""

import os
import re
import signal
import socket
import threading
import time

import pytest

import harness
from redisutil import (BUDGET, Fleet, Subscriber, assert_all_ok, arrivals_by_tag,  # noqa: F401
                       budget_key, count_between, fmt_times, grace_s, loadgen, pick_raw,
                       raw_samples, redis_factory, shared_bound, shared_config,
                       steady_rate, window_max)
from test_ops import check_exposition

RATE = 30.0
BOUND_1S = shared_bound(RATE, 1)  # 32


# --------------------------------------------------------------------------- helpers

def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def targets(fleet, rate, duration, starts=None, durations=None):
    return [{"port": p, "rate": rate, "duration": (durations or {}).get(k, duration),
             "tag": "i%d" % k, "start": (starts or {}).get(k, 0.0)}
            for k, p in enumerate(fleet.ports)]


def load_times(upstream):
    """Arrival times of every load request (tag=...) the upstream received."""
    return sorted(t for ts in arrivals_by_tag(upstream).values() for t in ts)


def assert_bound(times, what, bound=BOUND_1S, window=1.0):
    got = window_max(times, window)
    assert got <= bound, "%s: %d arrivals in one %.2fs window, the bound is %d" % (
        what, got, window - 0.02, bound)
    return got


def wait_all_modes(fleet, mode, timeout, what=None):
    harness.wait_until(lambda: all(fleet.mode(i) == mode for i in range(len(fleet))),
                       timeout, interval=0.05, what=what or "every instance in mode %s" % mode)


def secrets_absent(fleet, *secrets):
    for i in range(len(fleet)):
        err = fleet.stderr(i)
        for s in secrets:
            assert s not in err, "the Redis password appears in %s's log" % fleet.names[i]


class PauseUpstream(harness.Upstream):
    """harness.Upstream that answers the first request whose last path segment is
    `pause429` with 429 + Retry-After (2 s) and records when it read it (t_429)."""

    def __init__(self, retry_after="2"):
        super().__init__()
        self.retry_after = retry_after
        self.t_429 = None

    async def _respond(self, req, writer):
        if req.path.rsplit("/", 1)[-1] == "pause429" and self.t_429 is None:
            self.t_429 = req.t
            keep = self._wants_keepalive(req)
            await self._send(writer, 429, [("Retry-After", self.retry_after),
                                           ("Content-Type", "text/plain")],
                             b"slow down\n", keep)
            return keep
        return await super()._respond(req, writer)


@pytest.fixture
def pause_upstream():
    u = PauseUpstream().start()
    yield u
    u.stop()


# --------------------------------------------------------------------------- a. the share

def test_three_instances_keep_one_budget(upstream, sluice_factory, redis_factory, loadgen):
    """a. Three instances sharing 30/s burst 1, each offered 40 req/s for 4 s (480
    requests, four times the budget): every request is answered 200; the upstream's busiest
    1 s window holds at most 32 (31 of one exact GCRA + 1 of grace); the steady rate, while
    all three still have a backlog, is within 3 % of 30/s. The Redis side holds the
    contract: the members ZSET names INSTANCE/UPSTREAM, the lease script is called with
    EVALSHA at a pace set by instances / horizon (< 30/s), and /metrics and /status report the
    budget (mode redis, 3 instances, slots released = requests sent, lateness within G).
    While all three have a backlog, each gets a third of the budget (within 20 %)."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    per, dur = 40.0, 4.0
    calls0 = redis.lease_calls()
    run = loadgen(targets(fleet, per, dur), timeout=90)

    sleep_until(run.t0 + 2.5)
    mid = [fleet.metrics(i) for i in range(3)]
    members_mid = redis.call("ZRANGE", budget_key("members"), 0, -1)
    results = run.wait(90)
    calls = redis.lease_calls() - calls0

    assert_all_ok(results)
    n = len(results)
    assert n == 480
    upstream.wait_for(n, timeout=5)
    by_tag = arrivals_by_tag(upstream)
    times = sorted(t for ts in by_tag.values() for t in ts)
    assert len(times) == n, "upstream got %d load requests for %d sent" % (len(times), n)

    busiest = assert_bound(times, "3 instances at 30/s")
    # steady: from 1 s after the first arrival until the first instance ran out of backlog
    end = min(max(ts) for ts in by_tag.values()) - 0.2
    rate, nsteady, span = steady_rate(times, 1.0, end)
    assert span >= 3.0, "steady part only %.2fs long (shares %r)" % (
        span, {k: len(v) for k, v in by_tag.items()})
    assert abs(rate - RATE) <= 0.03 * RATE, \
        "steady rate %.2f/s over %.2fs (%d arrivals), want 30/s within 3%%; busiest 1 s: %d" \
        % (rate, span, nsteady, busiest)
    # fair between instances: while all three have a backlog each holds at most its share
    # of the horizon, so each gets about a third of the budget, whichever asks first
    steady = {k: len([t for t in v if times[0] + 1.0 <= t <= end])
              for k, v in sorted(by_tag.items())}
    third = sum(steady.values()) / 3.0
    assert all(abs(c - third) <= 0.2 * third + 2 for c in steady.values()), \
        "unequal shares while every instance had a backlog: %r" % steady

    # Redis: the keys of the contract, members named INSTANCE/UPSTREAM
    keys = redis.keys("{sluice:%s}:*" % BUDGET)
    assert budget_key("tat") in keys and budget_key("members") in keys, keys
    assert sorted(members_mid) == sorted(fleet.member(i) for i in range(3)), members_mid
    # calls grow with instances / horizon (each renews when less than H/2 is covered),
    # not with requests: about 3 / 0.25 s = 12/s here, whatever the rate
    calls_per_s = calls / (times[-1] - times[0])
    assert 0 < calls_per_s < 30, "%d lease calls (EVALSHA) in %.1fs: %.1f/s" % (
        calls, times[-1] - times[0], calls_per_s)
    assert redis.commandstats().get("evalsha", 0) > 0, redis.commandstats()

    granted_total = 0
    for i in range(3):
        m = harness.scrape(fleet.admin_ports[i])
        assert fleet.mode(i, mid[i]) == "redis"
        assert fleet.mode(i, m) == "redis"
        assert fleet.shared_value(i, "sluice_shared_instances", mid[i]) == 3
        lr = fleet.lease_results(i, m)
        assert lr.get("ok", 0) > 0, lr
        assert lr.get("error", 0) == 0 and lr.get("timeout", 0) == 0, lr
        granted = fleet.shared_value(i, "sluice_shared_slots_total", m, outcome="granted")
        released = fleet.shared_value(i, "sluice_shared_slots_total", m, outcome="released")
        dropped = fleet.shared_value(i, "sluice_shared_slots_total", m, outcome="dropped")
        sent = len(by_tag["i%d" % i])
        assert released == sent, "%s: %d slots released for %d requests it sent" % (
            fleet.names[i], released, sent)
        assert granted >= released + dropped, (granted, released, dropped)
        granted_total += granted
        raw = raw_samples(fleet.admin_ports[i])
        lcount = pick_raw(raw, "sluice_shared_release_lateness_seconds_count",
                          upstream="api", budget=BUDGET)
        lsum = pick_raw(raw, "sluice_shared_release_lateness_seconds_sum",
                        upstream="api", budget=BUDGET)
        assert lcount > 0 and 0 <= lsum / lcount <= grace_s(RATE) + 0.001, (lsum, lcount)
        st = fleet.shared_status(i)
        assert st["mode"] == "redis" and st["released"] == released, st
        assert st["granted"] == granted and st["dropped"] == dropped, st
        assert isinstance(st["instances"], int) and isinstance(st["calls"], dict), st
        r = harness.http_request(fleet.admin_ports[i], "GET", "/metrics")
        check_exposition(r.body.decode("utf-8"))
    # every slot granted was taken from the one schedule: no more than the budget allows
    # over the run (plus one horizon of slots still held or dropped at the end)
    assert granted_total <= n + 3 * 15 + 3, "granted %d slots for %d requests" % (
        granted_total, n)
    print("\n[a] busiest 1 s %d (bound %d), steady %.3f/s over %.2fs, %d lease calls for %d "
          "requests (%.1f/s), steady shares %r" % (busiest, BOUND_1S, rate, span, calls, n,
                                                   calls_per_s, steady))


# --------------------------------------------------------------------------- b. Redis down

def test_redis_killed_under_load_falls_back_then_resumes(upstream, sluice_factory,
                                                         redis_factory, loadgen):
    """b. redis-server SIGKILLed 2 s into a 6 s run (3 instances, 15 req/s each, 30/s
    shared) and restarted on the same port 2.5 s later: every request is still answered
    200; while it is down each instance paces alone at 30/3 = 10/s, so the fleet stays
    near 30/s (20..36/s measured from 0.7 s after the kill, once held slots are spent);
    each logs the fallback and /metrics says mode fallback; once Redis is back, leases
    resume (mode redis, lease calls on the new server) and no 1 s window from the restart
    on holds more than 32."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    run = loadgen(targets(fleet, 15.0, 6.0), timeout=90)

    sleep_until(run.t0 + 2.0)
    t_kill = time.monotonic()
    redis.kill()
    wait_all_modes(fleet, "fallback", 3.0, "every instance in fallback after the kill")
    t_fallback = time.monotonic() - t_kill
    sleep_until(t_kill + 2.5)
    redis.start()
    t_back = time.monotonic()
    wait_all_modes(fleet, "redis", 5.0, "every instance back on Redis after the restart")
    t_redis = time.monotonic() - t_back
    results = run.wait(90)

    assert_all_ok(results)
    times = load_times(upstream)
    assert len(times) == len(results)
    for i in range(3):
        assert re.search(r"(?i)fallback", fleet.stderr(i)), \
            "%s did not log the fallback:\n%s" % (fleet.names[i], fleet.stderr(i)[-2000:])
        lr = fleet.lease_results(i)
        assert lr.get("error", 0) + lr.get("timeout", 0) >= 1, lr
    a, b = t_kill + 0.7, t_back
    outage_rate = count_between(times, a, b) / (b - a)
    assert 20.0 <= outage_rate <= 36.0, \
        "fleet rate %.1f/s while Redis was down (want ~30: each instance at 10/s): %r" % (
            outage_rate, fmt_times([t for t in times if a <= t < b], a))
    assert redis.lease_calls() > 0, "no lease call on the restarted server"
    after = [t for t in times if t >= t_back]
    assert len(after) >= 30, "test too gentle: only %d arrivals after the restart" % len(after)
    busiest_after = assert_bound(after, "after Redis came back")
    print("\n[b] fallback seen %.2fs after the kill, redis again %.2fs after the restart; "
          "outage rate %.1f/s; busiest 1 s after the restart %d (whole run %d)"
          % (t_fallback, t_redis, outage_rate, busiest_after, window_max(times)))


def test_redis_frozen_then_thawed_debits_the_outage(upstream, sluice_factory, redis_factory,
                                                    loadgen):
    """b'. redis-server stopped (SIGSTOP) for 2.5 s under load, then continued: its
    connections stay open but nothing answers, so calls time out (counted as timeouts),
    held slots are released, then each instance paces alone (mode fallback); after SIGCONT
    the same server (same run_id, data kept) answers again: leases resume without a fence
    ("new server" is not logged), the first call debits what was released meanwhile, so
    no burst follows: no 1 s window from the thaw on holds more than 32, and every request
    is answered 200."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    run_id = redis.run_id
    run = loadgen(targets(fleet, 15.0, 6.0), timeout=90)

    sleep_until(run.t0 + 2.0)
    t_stop = time.monotonic()
    redis.freeze()
    try:
        wait_all_modes(fleet, "fallback", 3.0, "every instance in fallback while frozen")
        sleep_until(t_stop + 2.5)
    finally:
        redis.thaw()
    t_thaw = time.monotonic()
    wait_all_modes(fleet, "redis", 5.0, "every instance back on Redis after SIGCONT")
    results = run.wait(90)

    assert_all_ok(results)
    assert redis.run_id == run_id
    times = load_times(upstream)
    for i in range(3):
        lr = fleet.lease_results(i)
        assert lr.get("timeout", 0) >= 1, "%s: no call counted as timeout: %r" % (
            fleet.names[i], lr)
        assert "new server" not in fleet.stderr(i), "fenced after a mere stall"
    a, b = t_stop + 0.7, t_thaw
    outage_rate = count_between(times, a, b) / (b - a)
    assert 20.0 <= outage_rate <= 36.0, "fleet rate %.1f/s while Redis was stopped" % outage_rate
    after = [t for t in times if t >= t_thaw]
    assert len(after) >= 30, "test too gentle: only %d arrivals after the thaw" % len(after)
    busiest_after = assert_bound(after, "after Redis answered again (debit)")
    print("\n[b'] outage rate %.1f/s, busiest 1 s after the thaw %d" % (outage_rate,
                                                                       busiest_after))


# --------------------------------------------------------------------------- c. fleet pause

def test_429_to_one_instance_pauses_the_fleet(pause_upstream, sluice_factory, redis_factory,
                                              loadgen):
    """c. Under load on three instances, one request through instance 0 gets 429 with
    Retry-After: 2: the pause is written to {sluice:api-budget}:pause and published on
    {sluice:api-budget}:ev, and no instance sends anything to the upstream from 0.2 s
    after the 429 (one round trip and scheduling) until 1.8 s after it; releases resume
    after the pause; the two other instances count it in sluice_shared_fleet_pauses_total.
    Every load request is answered 200."""
    upstream = pause_upstream
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    sub = Subscriber(redis, budget_key("ev"))
    try:
        run = loadgen(targets(fleet, 15.0, 6.0), timeout=90)
        answer = {}

        def send_429():
            answer["r"] = harness.http_request(fleet.ports[0], "GET", "/api/pause429",
                                               timeout=30)
        sleep_until(run.t0 + 1.5)
        th = threading.Thread(target=send_429, daemon=True)
        th.start()
        harness.wait_until(lambda: upstream.t_429 is not None, 10, interval=0.002,
                           what="the 429 request to reach the upstream")
        paused_key = harness.wait_until(
            lambda: redis.call("EXISTS", budget_key("pause")) == 1, 1.0, interval=0.01,
            what="%s in Redis" % budget_key("pause"))
        results = run.wait(90)
        th.join(30)
    finally:
        sub.close()
    t429 = upstream.t_429

    assert_all_ok(results)
    assert paused_key
    assert answer.get("r") is not None and answer["r"].status in (200, 429), answer
    times = sorted(r.t for r in upstream.requests)
    quiet = [t for t in times if t429 + 0.2 <= t < t429 + 1.8]
    assert not quiet, "sent during the fleet's pause (s after the 429): %r" % fmt_times(
        quiet, t429)
    assert count_between(times, t429 + 1.8, t429 + 3.5) >= 5, \
        "releases did not resume after the pause: %r" % fmt_times(
            [t for t in times if t > t429], t429)
    msgs = [t for t, _ in sub.messages if t429 - 0.05 <= t <= t429 + 0.5]
    assert msgs, "nothing published on %s around the 429 (messages at %r)" % (
        budget_key("ev"), fmt_times([t for t, _ in sub.messages], t429))
    for i in (1, 2):
        v = fleet.shared_value(i, "sluice_shared_fleet_pauses_total")
        assert v >= 1, "%s: sluice_shared_fleet_pauses_total %r" % (fleet.names[i], v)
    before = [t for t in times if t < t429]
    print("\n[c] last release before the 429: %.3fs before; first after: %.3fs after"
          % (t429 - max(before) if before else -1,
             min([t for t in times if t > t429 + 0.001], default=t429) - t429))


# --------------------------------------------------------------------------- d. NOSCRIPT

def test_script_flush_mid_run_reloads_the_script(upstream, sluice_factory, redis_factory,
                                                 loadgen):
    """d. SCRIPT FLUSH 2 s into a 5 s run on three instances: no client sees an error (all
    200), the NOSCRIPT answer is counted (result="noscript", on at least one instance:
    the script cache is the server's, so the first to reload it spares the others) and
    every instance goes on getting leases (its ok count grows after the flush), without
    a window above the bound."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    run = loadgen(targets(fleet, 15.0, 5.0), timeout=90)
    sleep_until(run.t0 + 2.0)
    ok_before = [fleet.lease_results(i).get("ok", 0) for i in range(3)]
    calls_before = redis.lease_calls()
    assert redis.script_flush() == "OK"
    results = run.wait(90)

    assert_all_ok(results)
    lrs = [fleet.lease_results(i) for i in range(3)]
    assert sum(lr.get("noscript", 0) for lr in lrs) >= 1, lrs
    for i in range(3):
        assert lrs[i].get("ok", 0) > ok_before[i], \
            "%s got no lease after the flush: %r -> %r" % (fleet.names[i], ok_before[i], lrs[i])
    assert redis.lease_calls() > calls_before + 3
    assert_bound(load_times(upstream), "across SCRIPT FLUSH")


# --------------------------------------------------------------------------- e. data lost

def test_redis_restarted_empty_fences_the_schedule(upstream, sluice_factory, redis_factory,
                                                   loadgen):
    """e. redis-server killed and started again at once, 2 s into a 5 s run: it lost the
    schedule (no persistence: a new run_id, no keys). Each instance notices the new server
    (logged "new server", sluice_shared_fences_total >= 1), fences the schedule one horizon
    ahead before granting, so the slots it still held from the old server and the new
    grants never overlap: no 1 s window from the restart on holds more than 32, and every
    request is answered 200. The budget's keys exist again on the new server."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    old_run_id = redis.run_id
    run = loadgen(targets(fleet, 15.0, 5.0), timeout=90)
    sleep_until(run.t0 + 2.0)
    redis.restart()
    t_back = time.monotonic()
    assert redis.run_id != old_run_id
    harness.wait_until(lambda: all("new server" in fleet.stderr(i) for i in range(3)), 5.0,
                       interval=0.05, what='"new server" in every instance\'s log')
    results = run.wait(90)

    assert_all_ok(results)
    for i in range(3):
        v = fleet.shared_value(i, "sluice_shared_fences_total")
        assert v >= 1, "%s: sluice_shared_fences_total %r" % (fleet.names[i], v)
        assert fleet.mode(i) == "redis"
    assert budget_key("tat") in redis.keys("{sluice:%s}:*" % BUDGET)
    times = load_times(upstream)
    after = [t for t in times if t >= t_back]
    busiest_after = assert_bound(after, "after Redis lost its data")
    print("\n[e] busiest 1 s after the restart %d, whole run %d" % (busiest_after,
                                                                   window_max(times)))


# --------------------------------------------------------------------------- f. reload

def test_reload_same_shared_section_keeps_serving(upstream, sluice_factory, redis_factory,
                                                  loadgen):
    """f. SIGHUP with the same file on each of three instances under load: every request
    is answered 200, the upstream sees no gap longer than 0.25 s around the reloads
    (30/s shared: 33 ms apart), the instances stay in mode redis (no fallback, no fence)
    and the bound holds."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3)
    clients_before = redis.call("CLIENT", "LIST")
    run = loadgen(targets(fleet, 15.0, 5.0), timeout=90)
    sleep_until(run.t0 + 2.0)
    t_hup = time.monotonic()
    for i in range(3):
        line = fleet.reload(i, fleet.configs[i])
        assert "reloaded " in line, line
    t_done = time.monotonic()
    results = run.wait(90)

    assert_all_ok(results)
    times = load_times(upstream)
    around = [t for t in times if t_hup - 0.5 <= t <= t_done + 1.0]
    gaps = [b - a for a, b in zip(around, around[1:])]
    assert around and max(gaps) <= 0.25, "a gap of %.3fs around the reloads: %r" % (
        max(gaps), fmt_times(around, t_hup))
    for i in range(3):
        assert fleet.mode(i) == "redis"
        err = fleet.stderr(i)
        assert "new server" not in err and not re.search(r"(?i)fallback", err), err[-2000:]
    assert_bound(times, "across reloads")
    kept = set(re.findall(r"addr=(\S+)", clients_before)) & set(
        re.findall(r"addr=(\S+)", redis.call("CLIENT", "LIST")))
    print("\n[f] reloads took %.3fs; Redis connections kept across the reload: %d"
          % (t_done - t_hup, len(kept)))


def test_reload_to_another_redis_moves_the_leases(upstream, sluice_factory, redis_factory,
                                                  loadgen):
    """f'. Under load, each of three instances is reloaded with shared.redis pointing at a
    second redis-server: the budget's keys and all three members appear there, the first
    server gets no lease call any more once the reloads are done, every request is
    answered 200, and the bound holds from one second after the last reload on."""
    r1 = redis_factory()
    r2 = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, r1, n=3)
    run = loadgen(targets(fleet, 15.0, 6.0), timeout=90)
    sleep_until(run.t0 + 2.0)
    t_hup = time.monotonic()
    for i in range(3):
        line = fleet.reload(i, fleet.config(i, redis_address=r2.address))
        assert "reloaded " in line, line
    t_done = time.monotonic()
    harness.wait_until(lambda: budget_key("tat") in r2.keys("{sluice:*"), 3.0, interval=0.02,
                       what="the budget's keys on the second Redis")
    harness.wait_until(
        lambda: sorted(r2.call("ZRANGE", budget_key("members"), 0, -1)) ==
        sorted(fleet.member(i) for i in range(3)), 3.0, interval=0.02,
        what="all three members on the second Redis")
    sleep_until(t_done + 0.5)
    r1_calls = r1.lease_calls()
    results = run.wait(90)

    assert_all_ok(results)
    assert r1.lease_calls() == r1_calls, "the first Redis still gets lease calls"
    assert r2.lease_calls() > 0
    times = load_times(upstream)
    assert_bound([t for t in times if t >= t_done + 1.0], "on the second Redis")
    print("\n[f'] busiest 1 s across the move (not asserted): %d; reloads took %.3fs"
          % (window_max([t for t in times if t >= t_hup - 0.5]), t_done - t_hup))


# --------------------------------------------------------------------------- g. drain

def test_drain_releases_held_and_queued_at_the_shared_rate(upstream, sluice_factory,
                                                           redis_factory, loadgen):
    """g. Three instances under load (20 req/s each); instance 0's clients stop at 2.5 s
    and it gets SIGTERM at 3 s with a queue: it stops accepting but keeps releasing what
    it holds at its share of the budget (its slots still come from Redis) until the queue
    is empty, then exits 0. Every request is answered 200, the fleet's busiest 1 s window
    stays within the bound, and the drain is paced (not sent at once)."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3, drain_timeout="30s")
    run = loadgen(targets(fleet, 20.0, 5.0, durations={0: 2.5}), timeout=90)
    s0 = fleet.daemons[0]
    sleep_until(run.t0 + 3.0)
    queued = fleet.status(0)["upstreams"][0]["queue_depth"]
    t_term = time.monotonic()
    s0.send_signal(signal.SIGTERM)
    rc = s0.wait(40)
    t_exit = time.monotonic()
    results = run.wait(90)

    assert rc == 0, "exit code %r after the drain:\n%s" % (rc, s0.stderr()[-3000:])
    assert "draining" in s0.stderr()
    assert_all_ok(results)
    assert queued >= 5, "test too slow: only %d queued at SIGTERM" % queued
    by_tag = arrivals_by_tag(upstream)
    mine = [t for t in by_tag["i0"] if t >= t_term]
    assert len(mine) >= queued, (len(mine), queued)
    span = max(mine) - t_term
    assert len(mine) / span <= RATE + 2, "drained %d in %.2fs: faster than the budget" % (
        len(mine), span)
    assert window_max(mine, 0.5) <= 17, "the drain was not paced: %r" % fmt_times(mine, t_term)
    assert_bound(sorted(t for ts in by_tag.values() for t in ts), "during the drain")
    print("\n[g] %d queued at SIGTERM, drained in %.2fs (%.1f/s), exit after %.2fs"
          % (queued, span, len(mine) / span, t_exit - t_term))


# --------------------------------------------------------------------------- h. password

def test_password_file_with_requirepass(upstream, sluice_factory, redis_factory, tmp_path):
    """h. A redis-server with requirepass and shared.password_file holding that password:
    the instance authenticates (leases granted: mode redis, the budget's keys exist),
    requests are answered 200, and the password never appears in its log."""
    pw = "sh4red-Budget-%d" % os.getpid()
    redis = redis_factory(password=pw)
    pwfile = tmp_path / "redis.pass"
    pwfile.write_text(pw + "\n")
    fleet = Fleet(sluice_factory, upstream.url, redis, n=1, password_file=pwfile)
    results = harness.run_concurrent(fleet.ports[0], ["/api/pw?i=%d" % i for i in range(10)],
                                     timeout=20)
    assert all(r is not None and r.status == 200 for r, _, _ in results), results
    assert fleet.mode(0) == "redis"
    assert fleet.lease_results(0).get("ok", 0) >= 1
    assert budget_key("tat") in redis.keys("*")
    secrets_absent(fleet, pw)


def test_wrong_password_falls_back_and_never_logs_it(upstream, sluice_factory, redis_factory,
                                                     tmp_path):
    """h'. The same Redis with a wrong password in password_file: the instance still starts
    and answers (mode fallback, 200s), logs the authentication failure, and neither the
    wrong nor the right password appears in its log; nothing was written to Redis."""
    pw = "right-Pw-%d" % os.getpid()
    wrong = "wrong-Pw-%d" % os.getpid()
    redis = redis_factory(password=pw)
    pwfile = tmp_path / "redis.pass"
    pwfile.write_text(wrong + "\n")
    fleet = Fleet(sluice_factory, upstream.url, redis, n=1, password_file=pwfile)
    results = harness.run_concurrent(fleet.ports[0], ["/api/pw?i=%d" % i for i in range(10)],
                                     timeout=20)
    assert all(r is not None and r.status == 200 for r, _, _ in results), results
    harness.wait_until(lambda: fleet.mode(0) == "fallback", 3.0, interval=0.05,
                       what="mode fallback with a wrong password")
    err = fleet.stderr(0)
    assert re.search(r"(?i)auth|password|WRONGPASS", err), \
        "the authentication failure is not logged:\n%s" % err[-2000:]
    secrets_absent(fleet, pw, wrong)
    assert redis.keys("*") == []
    lr = fleet.lease_results(0)
    assert lr.get("ok", 0) == 0 and lr.get("error", 0) >= 1, lr


# --------------------------------------------------------------------------- i. unix socket

def test_unix_socket_redis_and_default_instance_name(upstream, sluice_factory, redis_factory):
    """i. shared.redis: unix:/path to a redis-server listening on a unix socket only: leases
    are granted (mode redis, 200s), and without `instance:` the member is host:pid/api."""
    redis = redis_factory(unix=True)
    assert redis.address.startswith("unix:/")
    fleet = Fleet(sluice_factory, upstream.url, redis, n=1, names=["unused"],
                  instance=None)
    results = harness.run_concurrent(fleet.ports[0], ["/api/ux?i=%d" % i for i in range(10)],
                                     timeout=20)
    assert all(r is not None and r.status == 200 for r, _, _ in results), results
    assert fleet.mode(0) == "redis"
    members = redis.call("ZRANGE", budget_key("members"), 0, -1)
    assert members == ["%s:%d/api" % (socket.gethostname(), fleet.daemons[0].pid)], members


# --------------------------------------------------------------------------- j. -t

def test_check_does_not_connect(tmp_path):
    """j. `sluice -t` on a file whose shared.redis is a closed port says "configuration ok"
    at once, and on one whose shared.redis is a listener that never accepts, it makes no
    connection at all (the listener's backlog stays empty)."""
    up = harness.down_url()
    closed = shared_config(up, "127.0.0.1:%d" % harness.free_port())
    path = tmp_path / "closed.yaml"
    path.write_text(harness.to_yaml(closed) + "\n")
    t = time.monotonic()
    p = harness.run_cli(["-t", "-c", str(path)])
    took = time.monotonic() - t
    assert p.returncode == 0 and "configuration ok" in p.stdout + p.stderr, p
    assert took < 2.0, "sluice -t took %.2fs" % took

    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)
        ls.setblocking(False)
        cfg = shared_config(up, "127.0.0.1:%d" % ls.getsockname()[1])
        path = tmp_path / "listening.yaml"
        path.write_text(harness.to_yaml(cfg) + "\n")
        p = harness.run_cli(["-t", "-c", str(path)])
        assert p.returncode == 0 and "configuration ok" in p.stdout + p.stderr, p
        try:
            c, _ = ls.accept()
            c.close()
            raise AssertionError("sluice -t connected to shared.redis")
        except BlockingIOError:
            pass


# --------------------------------------------------------------------------- k. Redis load

def test_redis_load_is_leases_not_requests(upstream, sluice_factory, redis_factory, loadgen):
    """k. Three instances sharing 100/s, each offered 40 req/s for 4 s: Redis gets far
    fewer lease calls than requests (INFO commandstats, EVALSHA: < 30 calls/s while 100
    requests/s are released), every request is answered 200 and the busiest 1 s window
    stays within 102 (100 + 1 + ceil(G/T), G = 5 ms)."""
    redis = redis_factory()
    fleet = Fleet(sluice_factory, upstream.url, redis, n=3, rate="100/s")
    run = loadgen(targets(fleet, 40.0, 4.0), timeout=90)
    sleep_until(run.t0)
    c0, t0 = redis.lease_calls(), time.monotonic()
    sleep_until(run.t0 + 4.0)
    c1, t1 = redis.lease_calls(), time.monotonic()
    results = run.wait(90)

    assert_all_ok(results)
    times = load_times(upstream)
    released = count_between(times, t0, t1)
    per_s = (c1 - c0) / (t1 - t0)
    print("\n[k] EVALSHA %.1f calls/s for %.1f requests/s released (%.3f calls per request)"
          % (per_s, released / (t1 - t0), (c1 - c0) / max(released, 1)))
    assert c1 > c0, "no lease call at all"
    assert per_s < 30.0, "%.1f lease calls/s for %d requests in %.1fs" % (
        per_s, released, t1 - t0)
    assert_bound(times, "100/s shared", bound=shared_bound(100.0, 1))
