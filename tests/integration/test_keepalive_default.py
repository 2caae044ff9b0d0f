"""upstreams.NAME.keepalive defaults to max_in_flight (issue 9): with no `keepalive` in the
file, the idle pool holds as many connections as may be in flight, so a steady load at
max_in_flight reuses its connections instead of closing and reopening them."""

import pytest

import harness


def rounds(port, concurrency, total, path):
    """`total` requests in rounds of `concurrency` at once (each on its own client
    connection); every round ends before the next starts, so all the upstream connections
    of a round come back to the idle pool together."""
    out = []
    i = 0
    while i < total:
        n = min(concurrency, total - i)
        out += harness.run_concurrent(port, ["%s&i=%d" % (path, i + j) for j in range(n)],
                                      timeout=15)
        i += n
    return out


@pytest.mark.parametrize("max_in_flight,total", [(8, 200), (64, 320)])
def test_keepalive_defaults_to_max_in_flight(upstream, sluice_factory, max_in_flight, total):
    """No keepalive in the file, max_in_flight N, N clients at once in rounds (200
    requests for N = 8, 320 for N = 64), each request held 50 ms at the upstream so the
    whole round is in flight together: the upstream sees at most N TCP connections (+2
    for a noisy machine), each reused round after round.

    Before (725678d, 3373677): the default keepalive is 32; N = 8 passes, but with N = 64
    every round returns 64 connections to a pool that keeps 32, so about 32 new ones are
    opened per round (~190 for 5 rounds)."""
    cfg = harness.simple_config(upstream.url, max_in_flight=max_in_flight,
                                limits=[{"rate": "10000/s", "burst": max_in_flight}])
    del cfg["upstreams"]["api"]["keepalive"]
    s = sluice_factory(cfg)
    results = rounds(s.port, max_in_flight, total, "/api/slow?ms=50")
    bad = [(r.status if r else e) for r, e, _ in results if r is None or r.status != 200]
    assert not bad, bad[:5]
    upstream.wait_for(total)
    conns = upstream.connections
    assert conns <= max_in_flight + 2, (
        "%d requests in rounds of %d made %d upstream connections (max_in_flight %d, "
        "keepalive by default as many)" % (total, max_in_flight, conns, max_in_flight))
    assert s.alive()
