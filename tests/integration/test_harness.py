"""Self-tests of the harness: the recording upstream answered by curl and raw sockets,
without sluice, so a failure elsewhere can be blamed on the daemon and not on the harness."""

import hashlib
import json
import socket
import time

import harness


def test_upstream_echo_and_keepalive(upstream):
    p = harness.curl(["-H", "X-Test: a", upstream.url + "/one?x=1", upstream.url + "/two"])
    assert p.returncode == 0, p.stderr
    reqs = upstream.wait_for(2)
    assert [r.target for r in reqs] == ["/one?x=1", "/two"]
    assert reqs[0].header("x-test") == "a"
    assert reqs[0].conn_id == reqs[1].conn_id  # curl reused the connection
    body = json.loads(p.stdout.split(b"}")[0] + b"}")
    assert body["method"] == "GET" and body["target"] == "/one?x=1"


def test_upstream_chunked_and_length_bodies(upstream, tmp_path):
    data = harness.pattern_bytes(300000)
    f = tmp_path / "body"
    f.write_bytes(data)
    p = harness.curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@%s" % f,
                      upstream.url + "/echo"])
    assert p.returncode == 0 and p.stdout == data
    p = harness.curl(["--data-binary", "@%s" % f, upstream.url + "/x"])
    got = json.loads(p.stdout)
    assert got["body_len"] == len(data)
    assert got["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_upstream_behaviours(upstream):
    port = upstream.port
    r = harness.http_request(port, "GET", "/a/status/418")
    assert r.status == 418
    t0 = time.monotonic()
    r = harness.http_request(port, "GET", "/b/slow?ms=200")
    assert r.status == 200 and time.monotonic() - t0 >= 0.19
    r = harness.http_request(port, "GET", "/stream?bytes=200001&piece=7000")
    assert r.body == harness.pattern_bytes(200001)
    r = harness.http_request(port, "GET", "/big?bytes=3000000")
    assert hashlib.sha256(r.body).hexdigest() == harness.pattern_sha256(3000000)
    r = harness.http_request(port, "GET", "/headers")
    assert r.header("x-normal") == "yes" and r.header("x-foo") == "1"
    with harness.connect(port, 5) as s:
        s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""
    with harness.connect(port, 5) as s:
        s.sendall(b"GET /garbage HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not s.recv(100).startswith(b"HTTP/")
    assert upstream.errors == []


def test_down_url_refuses():
    port = int(harness.down_url().rsplit(":", 1)[1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused


def test_max_in_window():
    assert harness.max_in_window([0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3
    assert harness.max_in_window([], 1.0) == 0
    assert harness.max_in_window([0, 1, 2, 3], 1.0) == 1


def test_yaml_emitter():
    cfg = harness.simple_config("http://127.0.0.1:1/base", port=5)
    text = harness.to_yaml(cfg)
    assert "  - address: 127.0.0.1:5" in text
    assert "    url: http://127.0.0.1:1/base" in text
    assert "      - rate: 100/s" in text
    assert "    preserve_host: false" in text


def test_upstream_records_raw_bytes(upstream):
    req = b"GET /one HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    req2 = b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    with harness.connect(upstream.port, 5) as s:
        s.sendall(req + req2)
        with s.makefile("rb") as f:
            assert harness.read_response(f).status == 200
            assert harness.read_response(f).status == 200
    with harness.connect(upstream.port, 5) as s:
        s.sendall(b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with s.makefile("rb") as f:
            assert harness.read_response(f).status == 200
    reqs = upstream.wait_for(3)
    raw = upstream.raw
    assert list(raw) == [reqs[0].conn_id, reqs[2].conn_id]
    assert raw[reqs[0].conn_id] == req + req2
    assert upstream.raw_received() == req + req2 + \
        b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert upstream.wait_raw(b"/three", timeout=1) == reqs[2].conn_id


def test_upstream_scripted_raw_answers(upstream):
    kept = upstream.script("kept", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", b"loEXTRA",
                           delay=0.05)
    assert kept == "raw?s=kept"
    upstream.script("closed", b"HTTP/1.1 204 No Content\r\n\r\nstray", close=True)
    with harness.connect(upstream.port, 5) as s:
        # kept: the pieces verbatim (nothing added), then the connection serves on
        s.sendall(b"GET /a/raw?s=kept HTTP/1.1\r\nHost: x\r\n\r\n")
        want = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
        got = b""
        while len(got) < len(want):
            got += s.recv(4096)
        assert got == want
        s.sendall(b"HEAD /b/raw?s=closed HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
        assert got == b"HTTP/1.1 204 No Content\r\n\r\nstray"
    assert [r.method for r in upstream.requests] == ["GET", "HEAD"]
    assert upstream.connections == 1
    r = harness.http_request(upstream.port, "GET", "/raw?s=nope")
    assert r.status == 500 and len(upstream.errors) == 1
