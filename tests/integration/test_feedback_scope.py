"""Upstream feedback, structured (issue 9): `feedback: {enabled, scope, max_pause}`.

  - scope: key on a keyed route: a 429 for one tenant pauses only that tenant's flow; the
    others keep flowing (scope: upstream, the default, pauses every release)
  - max_pause: a Retry-After longer than it pauses for max_pause only (logged, counted in
    sluice_upstream_pauses_clamped_total)
  - a request refused 503 deadline while releases are paused is told the remaining pause
    in Retry-After, not 1 s

The upstream is fairutil.ScriptedUpstream: it answers as each test scripts, records when
each request arrived and when each scripted answer was written.
"""

import re
import select
import threading
import time

import pytest

import fairutil
import harness


def tenant_script(refuse, retry_after):
    """A script: the first request of tenant `refuse` (query k=) is answered 429 with
    Retry-After `retry_after`; every other request gets the JSON echo."""
    seen = set()
    lock = threading.Lock()

    def script(req, idx):
        k = fairutil.tag(req)
        with lock:
            first = k not in seen
            seen.add(k)
        if k == refuse and first:
            return 429, [("Retry-After", str(retry_after))], b"slow down\n"
        return None
    return script


def tenant_get(port, tenant, i, timeout=5):
    return harness.http_request(port, "GET", "/api/t?k=%s&i=%d" % (tenant, i),
                                headers=[("X-Tenant", tenant)], timeout=timeout)


def held_or_refused(port, tenant, i, t_pause_end, wait=1.5):
    """Send one request of `tenant` and watch it for `wait` s. Returns "held" when no answer
    came (the client is then closed, which withdraws it), or the Response, which must be a
    503 deadline whose Retry-After covers the rest of the pause (within 1 s)."""
    c = harness.RawClient(port, timeout=5).send("/api/t?k=%s&i=%d" % (tenant, i),
                                                headers=[("X-Tenant", tenant)])
    try:
        c.wait_read()
        readable, _, _ = select.select([c.sock], [], [], wait)
        if not readable:
            return "held"
        r = c.response()  # ConnectionError when closed without an answer
        t = time.monotonic()
    finally:
        c.close()
    harness.assert_sluice_error(r, 503, "deadline")
    left = t_pause_end - t
    ra = harness.retry_after(r)
    assert ra >= left - 1, "Retry-After %d while %.1f s of the pause remain: %r" % (ra, left, r)
    return r


FEEDBACK = {
    "key": {"scope": "key"},
    "upstream-default": None,                     # feedback: true, as before
    "upstream-explicit": {"enabled": True, "scope": "upstream"},
}


@pytest.mark.parametrize("case", list(FEEDBACK))
def test_429_for_one_tenant(sluice_factory, case):
    """Keyed route (key: header:X-Tenant). Tenant A's first request is answered 429
    Retry-After: 30 (relayed to A: retry.max_wait 1 s). Right after:
      scope key: tenant B's three requests are answered 200 at once (< 1 s each), while
        A's next request is held or refused 503 deadline with Retry-After >= the rest of
        A's pause (about 29 s, not 1);
      scope upstream (the default, or written as a mapping): B is held the same way (the
        difference the scope makes), and nothing of B reaches the upstream.

    Before (725678d): `feedback` takes only true/false, so the key and explicit cases are
    refused at start; in the default case B is held as required, but its 503 says
    Retry-After: 20 (the pause minus max_wait), not the remaining pause (about 30)."""
    up = fairutil.ScriptedUpstream(tenant_script("A", 30)).start()
    try:
        cfg = fairutil.fair_config(up.url, rate="50/s", burst=5, max_wait="10s",
                                   feedback=FEEDBACK[case],
                                   retry={"max_attempts": 3, "max_wait": "1s"},
                                   route={"key": "header:X-Tenant"})
        s = sluice_factory(cfg)
        r = tenant_get(s.port, "A", 0)
        assert r.status == 429 and r.header("retry-after") == "30", r
        t429 = up.answers[0][1]
        t_end = t429 + 30
        if case == "key":
            for i in range(3):
                t0 = time.monotonic()
                rb = tenant_get(s.port, "B", i)
                took = time.monotonic() - t0
                assert rb.status == 200, "B's request %d: %r" % (i, rb)
                assert took < 1.0, "B's request %d took %.2f s: held by A's pause" % (i, took)
            a = held_or_refused(s.port, "A", 1, t_end)
            assert [fairutil.tag(q) for q in up.requests] == ["A", "B", "B", "B"], up.requests
        else:
            b = held_or_refused(s.port, "B", 0, t_end)
            assert [fairutil.tag(q) for q in up.requests] == ["A"], \
                "B was sent while the upstream was paused: %r (%r)" % (up.requests, b)
    finally:
        up.stop()


def test_max_pause_clamps_a_long_retry_after(sluice_factory):
    """feedback: {max_pause: 2s}; the upstream answers 429 Retry-After: 3600 (relayed:
    retry.max_attempts 1). The next request is released about 2 s after that 429 (not an
    hour later), is answered 200, the clamp is logged (a line naming max_pause) and
    sluice_upstream_pauses_clamped_total{upstream="api"} is 1."""
    up = fairutil.ScriptedUpstream(tenant_script("A", 3600)).start()
    try:
        admin_port = harness.free_port()
        cfg = fairutil.fair_config(up.url, rate="50/s", burst=5, max_wait="10s",
                                   feedback={"max_pause": "2s"},
                                   retry={"max_attempts": 1}, admin_port=admin_port)
        s = sluice_factory(cfg)
        r = harness.http_request(s.port, "GET", "/api/x?k=A", timeout=5)
        assert r.status == 429 and r.header("retry-after") == "3600", r
        t429 = up.answers[0][1]
        r2 = harness.http_request(s.port, "GET", "/api/x?k=B", timeout=10)
        assert r2.status == 200, r2
        reqs = up.requests
        log = s.stderr()
        m = fairutil.metric_samples(admin_port)
    finally:
        up.stop()
    assert len(reqs) == 2, reqs
    after = reqs[1].t - t429
    assert 2.0 - 0.05 <= after <= 3.0, "released %.2f s after the 429 (max_pause 2 s)" % after
    clamp = [line for line in log.splitlines() if re.search(r"max_pause|clamp", line, re.I)]
    assert clamp, "the clamp is not in the log:\n" + log[-3000:]
    assert fairutil.metric_sum(m, "sluice_upstream_pauses_clamped_total", upstream="api") == 1


class SlowFirst(fairutil.ScriptedUpstream):
    """ScriptedUpstream whose first answer is written only after `delay` seconds."""

    def __init__(self, script, delay):
        super().__init__(script)
        self.delay = delay

    async def _respond(self, req, writer):
        if self._n == 0:
            import asyncio
            await asyncio.sleep(self.delay)
        return await super()._respond(req, writer)


def test_deadline_while_paused_tells_the_remaining_pause(sluice_factory):
    """max_in_flight 1, max_wait 2 s. X is at the upstream, Y queued behind it (admitted:
    its predicted wait is short); X is answered 429 Retry-After: 30 after 0.5 s (relayed:
    retries off), which pauses releases. Y then reaches max_wait in the queue and Z, sent
    after the 429, is refused on arrival; both get 503 deadline with Retry-After = the
    remaining pause in whole seconds rounded up (about 28 and 30), not 1 (Y) nor the pause
    minus max_wait (Z: "come back when your wait would fit").

    Before (725678d): Y is told Retry-After: 1, Z 28 (30 - max_wait)."""
    up = SlowFirst(tenant_script("X", 30), delay=0.5).start()
    try:
        cfg = fairutil.fair_config(up.url, rate="50/s", burst=5, max_wait="2s",
                                   max_in_flight=1, retry={"max_attempts": 1})
        s = sluice_factory(cfg)
        x = harness.RawClient(s.port, timeout=10).send("/api/x?k=X")
        y = z = None
        try:
            up.wait_for(1)
            y = harness.RawClient(s.port, timeout=10).send("/api/x?k=Y").wait_read()
            rx = x.response()
            assert rx.status == 429 and rx.header("retry-after") == "30", rx
            t429 = up.answers[0][1]
            z = harness.RawClient(s.port, timeout=10).send("/api/x?k=Z")
            rz = z.response()
            tz = time.monotonic()
            ry = y.response()
            ty = time.monotonic()
        finally:
            for c in (x, y, z):
                if c is not None:
                    c.close()
        reqs = up.requests
    finally:
        up.stop()
    assert len(reqs) == 1, reqs
    for name, r, t in (("Y (expired in the queue)", ry, ty), ("Z (refused on arrival)", rz, tz)):
        harness.assert_sluice_error(r, 503, "deadline")
        left = t429 + 30 - t
        ra = harness.retry_after(r)
        assert left - 1 <= ra <= left + 1.5, \
            "%s: Retry-After %d with %.2f s of the pause left: %r" % (name, ra, left, r)
    assert ty - t429 >= 1.0, "Y was refused before it waited out max_wait"
