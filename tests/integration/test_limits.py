"""Slow and hostile clients: the connection cap (stop accepting at
client.max_connections, resume below it) and client.timeout (idle keep-alive and
half-sent requests are closed)."""

import socket
import time

import harness


def limits_config(upstream, **client):
    c = {"max_connections": 3, "max_header_size": "8k", "max_body_size": "1m",
         "timeout": "60s"}
    c.update(client)
    return harness.simple_config(upstream.url, client=c)


def served_within(port, seconds):
    """Connect and send one request; True if answered 200 within `seconds`."""
    c = harness.RawClient(port, timeout=seconds)
    try:
        c.send("/api/cap")
        return c.response().status == 200
    except (socket.timeout, ConnectionError):
        return False
    finally:
        c.close()


def test_connection_cap_stops_and_resumes_accepting(upstream, sluice_factory):
    """on_max_connections: pause (producers that prefer to be slowed by TCP): at the cap
    sluice stops accepting, and resumes below it. (The default, reject, is in
    test_overload.py.)"""
    s = sluice_factory(limits_config(upstream, on_max_connections="pause"))
    idle = [harness.connect(s.port) for _ in range(3)]
    try:
        # Let sluice accept and count the three idle connections.
        harness.wait_until(lambda: "max_connections (3) reached" in s.stderr(), 5.0,
                           what="the cap to be reached")
        # A fourth client is not served while the cap holds (the kernel may complete its
        # handshake, but sluice does not accept it).
        assert not served_within(s.port, 0.8), "served beyond client.max_connections"
        assert upstream.count == 0
        idle.pop().close()
        # Below the cap again: accepting resumes and new clients are served.
        harness.wait_until(lambda: "accepting again" in s.stderr(), 5.0,
                           what="accepting to resume")
        assert served_within(s.port, 5.0)
    finally:
        for c in idle:
            c.close()
    # The client that gave up while the cap held had already sent its request; once
    # accepted, sluice may still read and forward it (its hang-up is seen only later).
    assert upstream.count in (1, 2), upstream.count


def test_idle_keepalive_connection_closed_at_timeout(upstream, sluice_factory):
    s = sluice_factory(limits_config(upstream, timeout="1s"))
    with harness.RawClient(s.port, timeout=5) as c:
        c.send("/api/k", close=False)
        assert c.response().status == 200
        t0 = time.monotonic()
        # Nothing more is sent: sluice closes the idle connection after client.timeout.
        assert c.sock.recv(1) == b""
        took = time.monotonic() - t0
    assert 0.5 <= took <= 3.5, "idle connection closed after %.2fs, timeout 1s" % took


def test_half_sent_headers_closed_at_timeout(upstream, sluice_factory):
    """A client that starts a request and stops (slowloris) is closed after
    client.timeout of silence, and nothing reaches the upstream."""
    s = sluice_factory(limits_config(upstream, timeout="1s"))
    with harness.connect(s.port, timeout=5) as c:
        c.sendall(b"GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        t0 = time.monotonic()
        try:
            data = c.recv(4096)
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
    assert 0.5 <= took <= 3.5, "half-sent request held %.2fs, timeout 1s" % took
    assert upstream.count == 0
