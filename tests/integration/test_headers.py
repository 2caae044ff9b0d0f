"""What is forwarded: request target rewriting (prefix, base path, query), methods,
end-to-end and hop-by-hop headers both ways, X-Forwarded-*, Host."""

import pytest

import harness

HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate"]


def one(upstream):
    return upstream.wait_for(1)[0]


@pytest.mark.parametrize("base,strip,path,want", [
    ("", True, "/api/x/y?q=1&r=%20z", "/x/y?q=1&r=%20z"),
    ("/base", True, "/api/x/y?q=1", "/base/x/y?q=1"),
    ("", False, "/api/x/y?q=1", "/api/x/y?q=1"),
    ("/base", False, "/api/x?q=1", "/base/api/x?q=1"),
    ("/base", True, "/api/", "/base/"),
    ("", True, "/api/?only=query", "/?only=query"),
    ("/base/", True, "/api/x", "/base/x"),
])
def test_target_rewriting(upstream, start_sluice, base, strip, path, want):
    s = start_sluice(upstream.url + base, strip_prefix=strip)
    r = harness.http_request(s.port, "GET", path)
    assert r.status == 200, r
    assert one(upstream).target == want


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_forwarded(upstream, start_sluice, method):
    s = start_sluice(upstream.url)
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    r = harness.http_request(s.port, method, "/api/m", body=body)
    assert r.status == 200, r
    got = one(upstream)
    assert got.method == method
    assert got.body == (body or b"")


def test_head_forwarded(upstream, start_sluice):
    s = start_sluice(upstream.url)
    with harness.RawClient(s.port) as c:
        c.send("/api/h", method="HEAD")
        r = c.response(method="HEAD")
    assert r.status == 200, r
    assert one(upstream).method == "HEAD"


def test_upstream_status_and_body_pass_through(upstream, start_sluice):
    s = start_sluice(upstream.url)
    for code in (201, 404, 418, 500, 503):
        r = harness.http_request(s.port, "GET", "/api/status/%d" % code)
        assert r.status == code, r
        assert r.header("sluice-reason") is None, "upstream's %d is not sluice's: %r" % (code, r)
        assert r.json()["target"] == "/status/%d" % code
    r = harness.http_request(s.port, "GET", "/api/status/204")
    assert r.status == 204 and r.body == b""


def test_successful_response_carries_queue_wait(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/x")
    assert r.status == 200
    assert harness.queue_wait_ms(r) < 200


def test_request_hop_by_hop_not_forwarded(upstream, start_sluice):
    s = start_sluice(upstream.url)
    sent = [("Connection", "keep-alive, X-Custom-Hop"), ("X-Custom-Hop", "secret"),
            ("Keep-Alive", "timeout=30"), ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"), ("Trailer", "X-Trail"), ("Upgrade", "foo/2"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-End-To-End", "kept"), ("Authorization", "Bearer t0k3n"),
            ("Cookie", "a=1; b=2"), ("User-Agent", "sluice-test/1")]
    r = harness.http_request(s.port, "GET", "/api/hop", headers=sent)
    assert r.status == 200, r
    got = one(upstream)
    names = got.header_names()
    for h in ("keep-alive", "proxy-connection", "te", "trailer", "upgrade",
              "proxy-authorization", "x-custom-hop", "transfer-encoding"):
        assert h not in names, "%s forwarded to the upstream: %r" % (h, got.headers)
    # sluice may set its own Connection toward the upstream, but not the client's tokens
    for v in got.header_all("connection"):
        assert "x-custom-hop" not in v.lower(), got.headers
        assert v.lower().strip() in ("keep-alive", "close"), got.headers
    assert got.header("x-end-to-end") == "kept"
    assert got.header("authorization") == "Bearer t0k3n"
    assert got.header("cookie") == "a=1; b=2"
    assert got.header("user-agent") == "sluice-test/1"


def test_repeated_end_to_end_headers_keep_order(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/rep",
                             headers=[("X-Multi", "one"), ("X-Other", "o"), ("X-Multi", "two")])
    assert r.status == 200
    vals = one(upstream).header_all("x-multi")
    assert vals in (["one", "two"], ["one, two"]), vals


def test_response_hop_by_hop_not_forwarded(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/headers")
    assert r.status == 200, r
    names = r.header_names()
    for h in ("x-foo", "keep-alive", "proxy-authenticate", "proxy-connection", "trailer",
              "upgrade", "te"):
        assert h not in names, "%s forwarded to the client: %r" % (h, r.headers)
    for v in r.header_all("connection"):
        assert "x-foo" not in v.lower(), r.headers
    assert r.header("x-normal") == "yes"
    assert r.body == b"headers\n"


def test_x_forwarded_for_created(upstream, start_sluice):
    s = start_sluice(upstream.url)
    assert harness.http_request(s.port, "GET", "/api/xff").status == 200
    assert one(upstream).header_all("x-forwarded-for") == ["127.0.0.1"]


def test_x_forwarded_for_appended(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/xff",
                             headers=[("X-Forwarded-For", "1.2.3.4")])
    assert r.status == 200
    assert one(upstream).header_all("x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]


def test_x_forwarded_proto_and_host(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/xf", host="client.example:8080",
                             headers=[("X-Forwarded-Proto", "https")])
    assert r.status == 200
    got = one(upstream)
    assert got.header_all("x-forwarded-proto") == ["http"], got.headers
    assert got.header_all("x-forwarded-host") == ["client.example:8080"], got.headers


def test_host_is_upstream_hostport(upstream, start_sluice):
    s = start_sluice(upstream.url)
    r = harness.http_request(s.port, "GET", "/api/host", host="client.example")
    assert r.status == 200
    assert one(upstream).header_all("host") == ["127.0.0.1:%d" % upstream.port]


def test_preserve_host(upstream, start_sluice):
    s = start_sluice(upstream.url, preserve_host=True)
    r = harness.http_request(s.port, "GET", "/api/host", host="client.example:1234")
    assert r.status == 200
    assert one(upstream).header_all("host") == ["client.example:1234"]


def test_host_omits_default_port(start_sluice):
    """An upstream on port 80: Host is the bare host. Binds 127.0.0.N:80 (needs root or
    CAP_NET_BIND_SERVICE, as `make test` has since it installs packages)."""
    up, errors = None, []
    for n in range(2, 12):
        u = harness.Upstream(host="127.0.0.%d" % n, port=80)
        try:
            up = u.start()
            break
        except OSError as e:
            errors.append(e)
    assert up is not None, "cannot listen on port 80 of any 127.0.0.N: %r" % errors[:2]
    try:
        s = start_sluice("http://%s" % up.host)
        r = harness.http_request(s.port, "GET", "/api/host")
        assert r.status == 200, r
        assert up.wait_for(1)[0].header_all("host") == [up.host]
    finally:
        up.stop()
