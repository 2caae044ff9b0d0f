"""Bodies both ways arrive intact (sha256), and a large response is streamed: sluice's
memory stays bounded while the client reads slowly."""

import hashlib
import json
import socket
import time

import harness

MiB = 1024 * 1024


def test_post_1mib_content_length(upstream, start_sluice):
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(MiB)  # exactly client.max_body_size: allowed
    r = harness.http_request(s.port, "POST", "/api/upload", body=body, timeout=20)
    assert r.status == 200, r
    got = r.json()
    assert got["body_len"] == MiB
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert upstream.wait_for(1)[0].body == body


def test_echo_1mib(upstream, start_sluice):
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(MiB)[::-1]
    r = harness.http_request(s.port, "POST", "/api/echo", body=body, timeout=20)
    assert r.status == 200, r
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(body).hexdigest()


def test_post_chunked_with_curl(upstream, start_sluice, tmp_path):
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(700001)
    f = tmp_path / "body.bin"
    f.write_bytes(body)
    p = harness.curl(["-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/x",
                      "--data-binary", "@%s" % f, s.url("/api/upload")], timeout=20)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["body_len"] == len(body)
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert upstream.wait_for(1)[0].body == body


def chunked(body, sizes, ext_at=None, trailer=b""):
    """body in chunks of the given sizes (cycled); a chunk extension on chunk ext_at."""
    off, i, out = 0, 0, []
    while off < len(body):
        n = min(sizes[i % len(sizes)], len(body) - off)
        ext = b";ext=1" if i == ext_at else b""
        out.append(b"%x%s\r\n" % (n, ext) + body[off:off + n] + b"\r\n")
        off += n
        i += 1
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def post_chunked_echo(port, payload):
    data = (b"POST /api/echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + payload)
    return harness.raw_request(port, data, timeout=20)


def test_echo_chunked_odd_sizes(upstream, start_sluice):
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(100000)
    r = post_chunked_echo(s.port, chunked(body, [1, 7, 4093, 65536]))
    assert r.status == 200, r
    assert r.body == body


def test_chunked_request_with_trailer(upstream, start_sluice):
    """A trailer section after the last chunk is valid HTTP/1.1 (RFC 9112 7.1.2)."""
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(5000)
    r = post_chunked_echo(s.port, chunked(body, [1000], trailer=b"X-Trailer: t\r\n"))
    assert r.status == 200, r
    assert r.body == body


def test_chunked_request_with_extension_ignored(upstream, start_sluice):
    """A chunk extension (";name=value" after the size) is ignored (RFC 9112 7.1.1): the
    request succeeds and the upstream receives the body, without the extension."""
    s = start_sluice(upstream.url)
    body = harness.pattern_bytes(5000)
    r = post_chunked_echo(s.port, chunked(body, [1000], ext_at=2))
    assert r.status == 200, r
    assert r.body == body
    reqs = upstream.wait_for(1)
    assert len(reqs) == 1 and reqs[0].body == body
    assert b"ext=1" not in upstream.raw_received()


def test_big_content_length_response(upstream, start_sluice):
    s = start_sluice(upstream.url)
    n = 8 * MiB + 3
    r = harness.http_request(s.port, "GET", "/api/big?bytes=%d" % n, timeout=30)
    assert r.status == 200
    assert len(r.body) == n
    assert hashlib.sha256(r.body).hexdigest() == harness.pattern_sha256(n)


def test_32mib_streamed_response_with_curl(upstream, start_sluice, tmp_path):
    s = start_sluice(upstream.url)
    n = 32 * MiB + 5
    out = tmp_path / "out.bin"
    p = harness.curl(["-o", str(out), "-w", "%{http_code}",
                      s.url("/api/stream?bytes=%d&piece=50000" % n)], timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"200"
    h = hashlib.sha256()
    size = 0
    with open(out, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
            size += len(block)
    assert size == n
    assert h.hexdigest() == harness.pattern_sha256(n)


def test_slow_reader_memory_stays_bounded(upstream, start_sluice):
    """A 200 MiB streamed response read by a client that stalls for 1.5 s after the first
    MiB: sluice must apply backpressure to the upstream instead of buffering the body.
    Its RSS may not grow by more than 64 MiB; then the whole body arrives intact."""
    s = start_sluice(upstream.url, response="60s")
    n = 200 * MiB
    base_rss = s.rss_kib()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", s.port))
        sock.sendall(harness.build_request("GET", "/api/stream?bytes=%d" % n, "h"))
        f = sock.makefile("rb")
        head = f.readline()
        assert head.startswith(b"HTTP/1.1 200"), head
        while f.readline() not in (b"\r\n", b""):
            pass
        # read ~1 MiB of the (chunked) body, then stall while watching sluice's RSS
        got = 0
        while got < MiB:
            got += len(f.read1(65536))
        peak = base_rss
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            peak = max(peak, s.rss_kib())
            time.sleep(0.05)
        growth_mib = (peak - base_rss) / 1024
        assert growth_mib < 64, "sluice RSS grew by %.0f MiB while the client stalled" % growth_mib
        f.close()
    finally:
        sock.close()
    # and a fresh read of the same stream arrives complete and intact
    r = harness.http_request(s.port, "GET", "/api/stream?bytes=%d" % (64 * MiB), timeout=60)
    assert r.status == 200
    assert hashlib.sha256(r.body).hexdigest() == harness.pattern_sha256(64 * MiB)


def test_bodies_held_in_queue_arrive_intact(upstream, start_sluice):
    """POST bodies wait in the queue with their request (rate 4/s) and each reaches the
    upstream intact and with its own request."""
    s = start_sluice(upstream.url, rate="4/s", burst=1)
    bodies = [harness.pattern_bytes(200000 + 1000 * i)[::-1] for i in range(4)]
    reqs = [("POST", "/api/q?i=%d" % i, (), b) for i, b in enumerate(bodies)]
    results = harness.run_concurrent(s.port, reqs, timeout=20)
    for i, (r, e, _) in enumerate(results):
        assert r is not None and r.status == 200, (i, r, e)
        got = r.json()
        assert got["target"] == "/q?i=%d" % i
        assert got["body_sha256"] == hashlib.sha256(bodies[i]).hexdigest()
    assert max(harness.queue_wait_ms(r) for r, _, _ in results) >= 600
