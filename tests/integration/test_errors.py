"""Errors sluice produces itself: upstream failures (502/504), no route (404), malformed
requests (400), oversized headers (431) and bodies (413). Each has a short text body; none
of the refused requests reaches the upstream.

"The upstream saw nothing" is checked after a sync point: a valid request sent after the
bad ones, once it has arrived, shows sluice had finished with the bad ones."""

import select
import socket
import time

import pytest

import harness


def sync_and_check_only(upstream, port, expect_before=()):
    r = harness.http_request(port, "GET", "/api/sync")
    assert r.status == 200, r
    got = [q.target for q in upstream.wait_for(len(expect_before) + 1)]
    assert got == list(expect_before) + ["/sync"], "upstream saw %r" % got


def test_upstream_connection_refused(start_sluice):
    s = start_sluice(harness.down_url())
    r = harness.http_request(s.port, "GET", "/api/x")
    harness.assert_sluice_error(r, 502, "upstream_connect")


def test_upstream_connection_refused_daemon_stays_up(start_sluice):
    s = start_sluice(harness.down_url())
    for _ in range(5):
        harness.assert_sluice_error(harness.http_request(s.port, "GET", "/api/x"), 502,
                                    "upstream_connect")
    assert s.alive()


def test_upstream_garbage(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/garbage")
    harness.assert_sluice_error(r, 502, "upstream_invalid")  # not an HTTP status line
    # the next request still works (a fresh upstream connection)
    assert harness.http_request(s.port, "GET", "/api/after").status == 200


def test_upstream_closes_without_answer(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/close")
    harness.assert_sluice_error(r, 502, "upstream_error")
    assert harness.http_request(s.port, "GET", "/api/after").status == 200


def test_upstream_response_timeout(upstream, start_sluice):
    s = start_sluice(upstream.url, response="500ms")
    t0 = time.monotonic()
    r = harness.http_request(s.port, "GET", "/api/slow?ms=3000")
    took = time.monotonic() - t0
    harness.assert_sluice_error(r, 504, "upstream_timeout")
    assert 0.4 <= took <= 2.0, "timeouts.response 500ms, answered after %.3f s" % took


def test_no_route(upstream, start_sluice):
    s = start_sluice(upstream.url)
    for path in ("/nothing", "/ap", "/api", "/API/x", "/"):
        r = harness.http_request(s.port, "GET", path)
        harness.assert_sluice_error(r, 404, "no_route")
    sync_and_check_only(upstream, s.port)


def test_host_route(upstream, sluice_factory):
    """A route with host: matches that host (any case, port ignored); other hosts get 404."""
    cfg = harness.simple_config(upstream.url, route_host="optional.example")
    s = sluice_factory(cfg)
    for host in ("optional.example", "OPTIONAL.Example:%d" % s.port, "optional.example:1"):
        r = harness.http_request(s.port, "GET", "/api/h", host=host)
        assert r.status == 200, (host, r)
    for host in ("other.example", "127.0.0.1:%d" % s.port, "optional.example.evil"):
        r = harness.http_request(s.port, "GET", "/api/h", host=host)
        harness.assert_sluice_error(r, 404, "no_route")
    r = harness.http_request(s.port, "GET", "/elsewhere", host="optional.example")
    harness.assert_sluice_error(r, 404, "no_route")
    assert upstream.count == 3


BAD_REQUESTS = [
    ("garbage_line", b"THIS IS NOT HTTP AT ALL\r\n\r\n"),
    ("no_version", b"GET /api/x\r\nHost: h\r\n\r\n"),
    ("junk_after_version", b"GET /api/x HTTP/1.1 junk\r\nHost: h\r\n\r\n"),
    ("bad_version", b"GET /api/x HTTP/x.y\r\nHost: h\r\n\r\n"),
    ("cl_and_te", b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("two_content_length", b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                           b"Content-Length: 6\r\n\r\nhello!"),
    ("te_not_chunked", b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"
                       b"hello"),
    ("te_chunked_not_last", b"POST /api/x HTTP/1.1\r\nHost: h\r\n"
                            b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("negative_content_length", b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n"
                                b"\r\nhello"),
]


@pytest.mark.parametrize("data", [b for _, b in BAD_REQUESTS], ids=[n for n, _ in BAD_REQUESTS])
def test_malformed_request_400(upstream, start_sluice, data):
    s = start_sluice(upstream.url)
    try:
        r = harness.raw_request(s.port, data, timeout=3)
    except (ConnectionError, socket.timeout) as e:
        pytest.fail("expected a 400 response, got %r" % e)
    assert r.status == 400, r
    assert len(r.body) > 0, "error should carry a short text body: %r" % r
    sync_and_check_only(upstream, s.port)


# Corrupt chunked bodies: 400 bad_request at once (not 413, and never a wait until
# client.timeout, 10 s here), the connection closed, nothing reaches the upstream. The last
# shape is a chunk not followed by CRLF whose next bytes look like hex (a lax reader takes
# them for the next chunk size and waits for that chunk).
BAD_CHUNKED = [
    ("bad_chunk_size", b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"ZZZ\r\nabc\r\n0\r\n\r\n"),
    ("chunk_longer_than_size",
     b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabcXY\r\n0\r\n\r\n"),
    ("chunk_not_followed_by_crlf",
     b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabcdef\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("data", [b for _, b in BAD_CHUNKED], ids=[n for n, _ in BAD_CHUNKED])
def test_malformed_chunked_body_refused(upstream, sluice_factory, data):
    s = sluice_factory(small_client_config(upstream))
    started = time.monotonic()
    with harness.connect(s.port, 5) as sock:
        sock.sendall(data)
        with sock.makefile("rb") as f:
            try:
                r = harness.read_response(f)
            except (ConnectionError, socket.timeout) as e:
                pytest.fail("expected a prompt 400, got %r after %.1f s"
                            % (e, time.monotonic() - started))
            harness.assert_sluice_error(r, 400, "bad_request")
            try:
                rest = f.read()
            except socket.timeout:
                pytest.fail("connection not closed after the 400")
            except ConnectionResetError:
                rest = b""
    assert rest == b"", rest
    assert time.monotonic() - started < 5
    sync_and_check_only(upstream, s.port)


def small_client_config(upstream, **client):
    c = {"max_connections": 64, "max_header_size": "8k", "max_body_size": "64k",
         "timeout": "10s"}
    c.update(client)
    return harness.simple_config(upstream.url, client=c)


def test_headers_too_large_431(upstream, sluice_factory):
    s = sluice_factory(small_client_config(upstream))
    # one 12 KiB header: 1.5 x max_header_size
    r = harness.http_request(s.port, "GET", "/api/x", headers=[("X-Big", "a" * 12288)])
    harness.assert_sluice_error(r, 431)
    # many small ones adding up to ~12 KiB
    many = [("X-H%03d" % i, "b" * 110) for i in range(110)]
    r = harness.http_request(s.port, "GET", "/api/x", headers=many)
    harness.assert_sluice_error(r, 431)
    # a long request line (URI) counts too: ~1.5 x
    r = harness.http_request(s.port, "GET", "/api/x?q=" + "c" * 12288)
    harness.assert_sluice_error(r, 431)
    sync_and_check_only(upstream, s.port)


def test_headers_under_limit_pass(upstream, sluice_factory):
    s = sluice_factory(small_client_config(upstream))
    r = harness.http_request(s.port, "GET", "/api/x", headers=[("X-Big", "a" * 6000)])
    assert r.status == 200, r
    assert upstream.wait_for(1)[0].header("x-big") == "a" * 6000


def send_body_watching(sock, body, piece=16384):
    """Send body in pieces, stopping as soon as the server has answered (it may answer
    413 before reading all of it, then close)."""
    for off in range(0, len(body), piece):
        rd, _, _ = select.select([sock], [], [], 0)
        if rd:
            return
        try:
            sock.sendall(body[off:off + piece])
        except (BrokenPipeError, ConnectionResetError):
            return


def post_big(port, head, body):
    with harness.connect(port, 10) as sock:
        sock.sendall(head)
        send_body_watching(sock, body)
        with sock.makefile("rb") as f:
            return harness.read_response(f)


def test_body_too_large_content_length_413(upstream, sluice_factory):
    s = sluice_factory(small_client_config(upstream))
    body = b"x" * (64 * 1024 + 1)
    head = ("POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)).encode()
    r = post_big(s.port, head, body)
    harness.assert_sluice_error(r, 413)
    sync_and_check_only(upstream, s.port)


def test_body_too_large_chunked_413(upstream, sluice_factory):
    s = sluice_factory(small_client_config(upstream))
    piece = b"y" * 8192
    body = b"".join(b"2000\r\n" + piece + b"\r\n" for _ in range(12)) + b"0\r\n\r\n"  # 96 KiB
    head = b"POST /api/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    r = post_big(s.port, head, body)
    harness.assert_sluice_error(r, 413)
    sync_and_check_only(upstream, s.port)


def test_body_at_limit_passes(upstream, sluice_factory):
    s = sluice_factory(small_client_config(upstream))
    body = harness.pattern_bytes(64 * 1024)
    r = harness.http_request(s.port, "POST", "/api/echo", body=body)
    assert r.status == 200 and r.body == body
