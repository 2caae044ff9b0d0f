"""A second TERM stops at once: what is queued gets 503 shutdown, requests at the
upstream and answers being streamed are cut (their client connections closed), and the
process still exits 0 with nothing leaked (the sanitizer check runs at teardown)."""

import signal
import socket
import time

import harness


def test_second_term_stops_now_and_leaks_nothing(upstream, sluice_factory):
    cfg = harness.simple_config(upstream.url, rate="2/s", burst=2, drain_timeout="30s")
    s = sluice_factory(cfg)
    slow = harness.RawClient(s.port, timeout=10).send("/api/slow?ms=8000")
    stream = harness.RawClient(s.port, timeout=10).send(
        "/api/stream?bytes=%d&piece=65536&delay_ms=50" % (64 << 20))
    upstream.wait_for(2)
    queued = [harness.RawClient(s.port, timeout=10).send("/api/q%d" % i) for i in range(3)]
    harness.wait_all_read(queued)
    try:
        s.send_signal(signal.SIGTERM)
        harness.wait_until(lambda: "draining" in s.stderr(), 5.0, what="the drain to start")
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        assert s.wait(10) == 0, s.stderr()[-2000:]
        assert time.monotonic() - t0 < 5, "a second TERM should stop at once"
        # Queued requests were answered 503 shutdown, never sent upstream.
        for c in queued:
            harness.assert_sluice_error(c.response(), 503, "shutdown")
        # The request at the upstream was cut: its connection closes without an answer.
        try:
            r = slow.response()
        except (ConnectionError, socket.timeout, ValueError, EOFError):
            r = None
        assert r is None, r
        assert upstream.count == 2
    finally:
        for c in [slow, stream] + queued:
            c.close()
