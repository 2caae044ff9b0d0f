"""Strict HTTP/1.1 at the client edge (issue 8): what sluice refuses, what it forwards.

The rule: a request that is not valid HTTP/1.1 gets 400 with `Sluice-Reason: bad_request`
and a short text body, the connection is closed after that answer (a request pipelined
behind it on the same socket is neither answered nor forwarded), and the upstream
receives no byte of it. Exceptions are named where they apply (405, 413, 431, 404).

Every case sends exact bytes on a raw socket and checks both edges: what the client got
(strictutil.exchange: every byte, and how the connection ended) and what the upstream
received (its raw bytes, after a valid sync request sent once the client side is done;
strictutil.upstream_problems). No socket operation waits longer than strictutil.TIMEOUT
(5 s), much less than client.timeout (60 s): a request sluice waits on instead of
refusing fails here as "connection not closed".
"""

import pytest

import harness
import strictutil
from strictutil import head

CHUNKED = "Transfer-Encoding: chunked"


def refused(upstream, s, data, status=400, reason="bad_request", pieces=None, **kw):
    """data is answered `status`/`reason`, the connection closed, the upstream saw nothing."""
    ex = strictutil.exchange(s.port, data, until=strictutil.wrong_first(status),
                             pieces=pieces, **kw)
    strictutil.check(strictutil.refused_problems(ex, status, reason),
                     strictutil.upstream_problems(upstream, s.port))
    return ex


def answered(s, data, n=1, methods=("GET",)):
    """Send data; read until n responses are complete (or the connection ends)."""
    return strictutil.exchange(s.port, data, methods=methods,
                               until=lambda rs: len(rs) >= n)


def one_ok(ex):
    """Client-side problems unless ex holds one 200 from the upstream (its echo JSON)."""
    if [r.status for r in ex.responses][:1] != [200]:
        return ["client: expected a 200 from the upstream, got %r" % ex]
    if ex.responses[0].header("sluice-reason") is not None:
        return ["client: a 200 with a Sluice-Reason: %r" % ex]
    return []


def raw_of(upstream, target):
    """The raw bytes of the connection on which the upstream received `target`."""
    for q in upstream.requests:
        if q.target == target:
            return upstream.raw[q.conn_id]
    return b""


def cases(table):
    return pytest.mark.parametrize("data", [d for _, d in table], ids=[n for n, _ in table])


# --------------------------------------------------------------------------- 1. field names

SMUGGLED_REQ = b"GET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

FIELD_NAMES = [
    ("te_space_before_colon", head("POST /api/x HTTP/1.1", "Host: a", "Transfer-Encoding : chunked",
                                   body="5\r\nhello\r\n0\r\n\r\n")),
    # the reproducer of issue 8, exactly
    ("cl_space_before_colon",
     b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"),
    # ... with a second request behind it in the same bytes
    ("cl_space_then_request",
     b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello" + SMUGGLED_REQ),
    # ... with the second request as the body a lenient reader would skip
    ("cl_space_request_as_body",
     b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : %d\r\n\r\n" % len(SMUGGLED_REQ)
     + SMUGGLED_REQ),
    ("space_in_name", head("GET /api/x HTTP/1.1", "Host: a", "X Bad: 1")),
    ("empty_name", head("GET /api/x HTTP/1.1", "Host: a", ": x")),
    ("at_in_name", head("GET /api/x HTTP/1.1", "Host: a", "X@Y: 1")),
    ("htab_in_name", head("GET /api/x HTTP/1.1", "Host: a", "X\tBad: 1")),
    ("htab_before_colon", head("GET /api/x HTTP/1.1", "Host: a", "X-Bad\t: 1")),
]


@cases(FIELD_NAMES)
def test_invalid_field_name_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


# --------------------------------------------------------------------------- 2. target bytes

TARGET_BYTES = [
    ("bare_cr", b"GET /api/crt\rX-Injected: yes HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("htab", b"GET /api/a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("ctl_01", b"GET /api/a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("del_7f", b"GET /api/a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("non_ascii", b"GET /api/caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space", b"GET /api/a b HTTP/1.1\r\nHost: a\r\n\r\n"),
]


@cases(TARGET_BYTES)
def test_raw_byte_in_target_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


# --------------------------------------------------------------------------- 3. absolute form

@pytest.mark.parametrize("preserve_host", [False, True], ids=["upstream_host", "preserve_host"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_absolute_form_routed_by_its_authority(upstream, start_sluice, preserve_host, scheme):
    """RFC 9112 3.2.2: the authority of an absolute-form target replaces Host. It routes,
    it is what preserve_host sends and what X-Forwarded-Host says; toward the upstream
    the target is origin-form and the client's Host field is gone."""
    s = start_sluice(upstream.url, route_host="internal.example", preserve_host=preserve_host)
    ex = answered(s, head("GET %s://internal.example/api/x?q=1 HTTP/1.1" % scheme,
                          "Host: other.example"))
    p = one_ok(ex)
    p += strictutil.upstream_problems(upstream, s.port, expect=["/x?q=1"],
                                      host="internal.example")
    raw = raw_of(upstream, "/x?q=1")
    if not raw.startswith(b"GET /x?q=1 HTTP/1.1\r\n"):
        p.append("upstream: request line not origin-form /x?q=1: %r" % raw[:200])
    q = [r for r in upstream.requests if r.target == "/x?q=1"]
    if q:
        want_host = "internal.example" if preserve_host else upstream.hostport
        if q[0].header_all("host") != [want_host]:
            p.append("upstream: Host %r, expected [%r]" % (q[0].header_all("host"), want_host))
        if q[0].header_all("x-forwarded-host") != ["internal.example"]:
            p.append("upstream: X-Forwarded-Host %r, expected ['internal.example']"
                     % q[0].header_all("x-forwarded-host"))
    if b"other.example" in raw:
        p.append("upstream: the client's Host field (other.example) was forwarded: %r" % raw)
    strictutil.check(p)


def test_absolute_form_authority_without_route_404(upstream, start_sluice):
    s = start_sluice(upstream.url, route_host="internal.example")
    ex = strictutil.exchange(s.port, head("GET http://other.example/api/x HTTP/1.1",
                                          "Host: internal.example"),
                             until=lambda rs: len(rs) >= 1)
    p = []
    try:
        harness.assert_sluice_error(ex.responses[0] if ex.responses else None, 404, "no_route")
    except AssertionError as e:
        p.append("client: %s (%r)" % (e, ex))
    strictutil.check(p, strictutil.upstream_problems(upstream, s.port, sync=False))


ABSOLUTE_BAD = [
    ("userinfo", head("GET http://u@internal.example/api/x HTTP/1.1", "Host: internal.example")),
    ("userinfo_password", head("GET http://u:p@internal.example/api/x HTTP/1.1",
                               "Host: internal.example")),
    ("scheme_ftp", head("GET ftp://internal.example/api/x HTTP/1.1", "Host: internal.example")),
    ("scheme_ws", head("GET ws://internal.example/api/x HTTP/1.1", "Host: internal.example")),
]


@cases(ABSOLUTE_BAD)
def test_absolute_form_refused_400(upstream, start_sluice, data):
    s = start_sluice(upstream.url, route_host="internal.example")
    ex = strictutil.exchange(s.port, data, until=strictutil.wrong_first(400))
    strictutil.check(strictutil.refused_problems(ex),
                     strictutil.upstream_problems(upstream, s.port, host="internal.example"))


# --------------------------------------------------------------------------- 4. Host

HOST_BAD = [
    ("http11_without_host", b"GET /api/x HTTP/1.1\r\n\r\n"),
    ("two_hosts_same", head("GET /api/x HTTP/1.1", "Host: a", "Host: a")),
    ("two_hosts_different", head("GET /api/x HTTP/1.1", "Host: a", "Host: b")),
]


@cases(HOST_BAD)
def test_host_field_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


def test_http10_without_host_forwarded(upstream, start_sluice):
    s = start_sluice(upstream.url)
    ex = answered(s, b"GET /api/ten HTTP/1.0\r\n\r\n")
    p = one_ok(ex) + strictutil.upstream_problems(upstream, s.port, expect=["/ten"])
    strictutil.check(p)


# --------------------------------------------------------------------------- 5. field values

FIELD_VALUES = [
    ("nul_in_value", head("GET /api/x HTTP/1.1", "Host: a", b"X-A: a\x00b")),
    ("obs_fold_sp", head("GET /api/x HTTP/1.1", "Host: a", "X-A: a", " b")),
    ("obs_fold_htab", head("GET /api/x HTTP/1.1", "Host: a", "X-A: a", "\tb")),
    ("obs_fold_first_field", head("GET /api/x HTTP/1.1", " X-A: a", "Host: a")),
    ("bare_lf_everywhere", b"GET /api/x HTTP/1.1\nHost: a\n\n"),
    ("bare_lf_one_field", b"GET /api/x HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n"),
    ("bare_cr_in_value", head("GET /api/x HTTP/1.1", "Host: a", "X-A: a\rb")),
    ("bare_cr_before_crlf", head("GET /api/x HTTP/1.1", "Host: a", "X-A: a\r")),
]


@cases(FIELD_VALUES)
def test_invalid_field_line_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


# --------------------------------------------------------------------------- 6. versions

VERSIONS_BAD = [
    ("no_version", b"GET /api/x\r\nHost: a\r\n\r\n"),
    ("http_0_9", head("GET /api/x HTTP/0.9", "Host: a")),
    ("http_1_2", head("GET /api/x HTTP/1.2", "Host: a")),
    ("http_1_10", head("GET /api/x HTTP/1.10", "Host: a")),
    ("http_2_0", head("GET /api/x HTTP/2.0", "Host: a")),
    ("lowercase", head("GET /api/x http/1.1", "Host: a")),
]


@cases(VERSIONS_BAD)
def test_bad_version_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_good_versions_forwarded(upstream, start_sluice, version):
    s = start_sluice(upstream.url)
    ex = answered(s, head("GET /api/v HTTP/%s" % version[5:], "Host: a"))
    p = one_ok(ex) + strictutil.upstream_problems(upstream, s.port, expect=["/v"])
    strictutil.check(p)


# --------------------------------------------------------------------------- 7. request line

REQUEST_LINE_BAD = [
    ("two_spaces_after_method", head("GET  /api/x HTTP/1.1", "Host: a")),
    ("two_spaces_before_version", head("GET /api/x  HTTP/1.1", "Host: a")),
    ("trailing_space", head("GET /api/x HTTP/1.1 ", "Host: a")),
    ("leading_space", head(" GET /api/x HTTP/1.1", "Host: a")),
    ("method_not_token", head("G(T /api/x HTTP/1.1", "Host: a")),
]


@cases(REQUEST_LINE_BAD)
def test_bad_request_line_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


METHODS_NOT_FORWARDED = [
    ("BREW", head("BREW /api/x HTTP/1.1", "Host: a")),
    ("TRACE", head("TRACE /api/x HTTP/1.1", "Host: a")),
    ("CONNECT", head("CONNECT internal.example:443 HTTP/1.1", "Host: internal.example:443")),
]


@cases(METHODS_NOT_FORWARDED)
def test_method_not_forwarded_405(upstream, start_sluice, data):
    """A method that is a token but not one sluice forwards: 405 method_not_allowed. The
    request is well framed, so whether the connection stays open is not asserted."""
    s = start_sluice(upstream.url)
    ex = strictutil.exchange(s.port, data, until=lambda rs: len(rs) >= 1)
    p = []
    try:
        harness.assert_sluice_error(ex.responses[0] if ex.responses else None, 405,
                                    "method_not_allowed")
    except AssertionError as e:
        p.append("client: %s (%r)" % (e, ex))
    strictutil.check(p, strictutil.upstream_problems(upstream, s.port))


def test_empty_line_before_request_line_ignored(upstream, start_sluice):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF) received
    before the request-line."""
    s = start_sluice(upstream.url)
    ex = answered(s, b"\r\n" + head("GET /api/after_crlf HTTP/1.1", "Host: a"))
    strictutil.check(one_ok(ex),
                     strictutil.upstream_problems(upstream, s.port, expect=["/after_crlf"]))


# --------------------------------------------------------------------------- 8. Content-Length

def post(*fields, body=b"hello", version="1.1"):
    return head("POST /api/x HTTP/%s" % version, "Host: a", *fields, body=body)


CONTENT_LENGTH_BAD = [
    ("plus", post("Content-Length: +5")),
    ("hex", post("Content-Length: 0x5")),
    ("list", post("Content-Length: 5,5")),
    ("list_space", post("Content-Length: 5, 5")),
    ("two_fields_same", post("Content-Length: 5", "Content-Length: 5")),
    ("two_fields_different", post("Content-Length: 5", "Content-Length: 6", body=b"hello!")),
    ("negative", post("Content-Length: -1")),
    ("empty", post("Content-Length: ")),
    ("trailing_junk", post("Content-Length: 5x")),
    ("with_transfer_encoding", post("Content-Length: 5", CHUNKED,
                                    body=b"5\r\nhello\r\n0\r\n\r\n")),
    ("with_transfer_encoding_first", post(CHUNKED, "Content-Length: 5",
                                          body=b"5\r\nhello\r\n0\r\n\r\n")),
]


@cases(CONTENT_LENGTH_BAD)
def test_bad_content_length_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


@pytest.mark.parametrize("length", ["1048577", "18446744073709551616",
                                    "99999999999999999999999999999999"],
                         ids=["max_plus_1", "2_pow_64", "huge"])
def test_content_length_over_max_body_413(upstream, start_sluice, length):
    """Digits only, larger than client.max_body_size (1m), even beyond 64 bits: 413
    body_too_large at once (the body is not awaited), then closed."""
    s = start_sluice(upstream.url)
    refused(upstream, s, post("Content-Length: %s" % length, body=b"hel"),
            status=413, reason="body_too_large")


# --------------------------------------------------------------------------- 9. chunked

def chunked_post(payload, *fields, version="1.1", path="/api/x"):
    return head("POST %s HTTP/%s" % (path, version), "Host: a", CHUNKED, *fields, body=payload)


CHUNKED_BAD = [
    ("size_0x", chunked_post(b"0x3\r\nabc\r\n0\r\n\r\n")),
    ("size_leading_space", chunked_post(b" 3\r\nabc\r\n0\r\n\r\n")),
    ("size_space_then_garbage", chunked_post(b"3 xyz\r\nabc\r\n0\r\n\r\n")),
    ("size_not_hex", chunked_post(b"ZZZ\r\nabc\r\n0\r\n\r\n")),
    ("size_bare_lf", chunked_post(b"3\nabc\r\n0\r\n\r\n")),
    ("last_size_bare_lf", chunked_post(b"3\r\nabc\r\n0\n\r\n")),
    # the bytes after the chunk look like hex: a lax reader takes them for a size
    ("chunk_not_followed_by_crlf", chunked_post(b"3\r\nabcdef\r\n0\r\n\r\n")),
    ("chunk_longer_than_size", chunked_post(b"3\r\nabcXY\r\n0\r\n\r\n")),
    ("chunk_followed_by_bare_lf", chunked_post(b"3\r\nabc\n0\r\n\r\n")),
    ("size_overflows_64_bits", chunked_post(b"10000000000000003\r\nabc\r\n0\r\n\r\n")),
]


@cases(CHUNKED_BAD)
def test_bad_chunked_body_400(upstream, start_sluice, data):
    """400 at once: not 413, and never a wait until client.timeout (60 s here)."""
    refused(upstream, start_sluice(upstream.url), data)


@pytest.mark.parametrize("payload", [b"3;ext=1\r\nabc\r\n0\r\n\r\n",
                                     b'3 ; a="b"\r\nabc\r\n0\r\n\r\n',
                                     b"3;a=1;b\r\nabc\r\n2;c=\"x;y\"\r\nde\r\n0;z=1\r\n\r\n"],
                         ids=["ext", "ext_bws_quoted", "several"])
def test_chunk_extension_ignored(upstream, start_sluice, payload):
    """RFC 9112 7.1.1: unknown chunk extensions are ignored. The request succeeds and the
    upstream receives the body without them."""
    s = start_sluice(upstream.url)
    want = b"abcde" if b"de\r\n" in payload else b"abc"
    ex = answered(s, chunked_post(payload, path="/api/echo"))
    p = []
    if ex.statuses()[:1] != [200] or ex.responses[0].body != want:
        p.append("client: expected 200 echoing %r, got %r" % (want, ex))
    p += strictutil.upstream_problems(upstream, s.port, expect=["/echo"])
    q = [r for r in upstream.requests if r.target == "/echo"]
    if q and q[0].body != want:
        p.append("upstream: body %r, expected %r" % (q[0].body, want))
    raw = raw_of(upstream, "/echo")
    for ext in (b"ext=1", b'a="b"', b"c=", b"z=1"):
        if ext in raw:
            p.append("upstream: chunk extension %r forwarded: %r" % (ext, raw))
    strictutil.check(p)


def test_trailer_accepted_not_forwarded(upstream, start_sluice):
    s = start_sluice(upstream.url)
    ex = answered(s, chunked_post(b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n",
                                  path="/api/echo"))
    p = []
    if ex.statuses()[:1] != [200] or ex.responses[0].body != b"abc":
        p.append("client: expected 200 echoing 'abc', got %r" % ex)
    p += strictutil.upstream_problems(upstream, s.port, expect=["/echo"])
    raw = raw_of(upstream, "/echo").lower()
    if b"x-trailer" in raw or b"x-other" in raw:
        p.append("upstream: trailer fields forwarded: %r" % raw)
    strictutil.check(p)


TRANSFER_ENCODING_BAD = [
    ("gzip", head("POST /api/x HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", body="hello")),
    ("chunked_gzip", head("POST /api/x HTTP/1.1", "Host: a", "Transfer-Encoding: chunked, gzip",
                          body="5\r\nhello\r\n0\r\n\r\n")),
    ("gzip_chunked", head("POST /api/x HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked",
                          body="5\r\nhello\r\n0\r\n\r\n")),
    ("two_fields_chunked", head("POST /api/x HTTP/1.1", "Host: a", CHUNKED, CHUNKED,
                                body="5\r\nhello\r\n0\r\n\r\n")),
    ("two_fields_gzip_chunked", head("POST /api/x HTTP/1.1", "Host: a",
                                     "Transfer-Encoding: gzip", CHUNKED,
                                     body="5\r\nhello\r\n0\r\n\r\n")),
    ("chunked_in_http10", chunked_post(b"5\r\nhello\r\n0\r\n\r\n", version="1.0")),
]


@cases(TRANSFER_ENCODING_BAD)
def test_bad_transfer_encoding_400(upstream, start_sluice, data):
    refused(upstream, start_sluice(upstream.url), data)


# --------------------------------------------------------------------------- 10. hop-by-hop

TOKENS = ", ".join("X-Token-%02d" % i for i in range(80))  # 80 tokens, ~1 KB


@pytest.mark.parametrize("fields", [
    ["Connection: %s, X-Secret" % TOKENS],
    ["Connection: keep-alive", "Connection: X-Secret"],
    ["Connection: %s" % TOKENS, "Connection: X-Secret"],
], ids=["long_list", "two_fields", "long_list_then_second_field"])
def test_connection_listed_header_not_forwarded(upstream, start_sluice, fields):
    """A header named by Connection is hop-by-hop, however long the list and however many
    Connection fields carry it."""
    assert len(TOKENS) > 512
    s = start_sluice(upstream.url)
    ex = answered(s, head("GET /api/hop HTTP/1.1", "Host: a", *fields, "X-Secret: s3cr3t",
                          "X-Kept: yes"))
    p = one_ok(ex) + strictutil.upstream_problems(upstream, s.port, expect=["/hop"])
    raw = raw_of(upstream, "/hop").lower()
    if b"x-secret" in raw or b"s3cr3t" in raw:
        p.append("upstream: X-Secret forwarded: %r" % raw)
    if b"x-token-" in raw:
        p.append("upstream: the client's Connection tokens forwarded: %r" % raw)
    if b"\r\nx-kept: yes\r\n" not in raw:
        p.append("upstream: X-Kept (end-to-end) not forwarded: %r" % raw)
    strictutil.check(p)


# --------------------------------------------------------------------------- 11. path guard

PATH_BAD = [
    ("dotdot_semicolon", "/api/..;/x"),
    # ";" percent-encoded: a server that decodes, then strips ;parameters, sees ".."
    ("dotdot_encoded_semicolon", "/api/a/..%3b/x"),
    ("dotdot_backslash", "/api/..\\x"),
    ("encoded_backslashes", "/api/a%5c..%5cb"),
    ("encoded_backslashes_upper", "/api/a%5C..%5Cb"),
    ("encoded_slashes", "/api/a%2f..%2fb"),
    ("encoded_slashes_upper", "/api/a%2F..%2Fb"),
    ("encoded_dots", "/api/%2e%2e/x"),
    ("encoded_dot_mixed_case", "/api/%2E./x"),
]


@pytest.mark.parametrize("path", [p for _, p in PATH_BAD], ids=[n for n, _ in PATH_BAD])
def test_path_traversal_shape_400(upstream, start_sluice, path):
    s = start_sluice(upstream.url)
    refused(upstream, s, head("GET %s HTTP/1.1" % path, "Host: a"))


# --------------------------------------------------------------------------- 12. header size

def big_head(n_fields=None, one_field=None):
    fields = ["Host: a"]
    if n_fields:
        fields += ["X-H%04d: %s" % (i, "v" * 100) for i in range(n_fields)]
    if one_field:
        fields.append("X-Big: " + "b" * one_field)
    return head("GET /api/x HTTP/1.1", *fields)


@pytest.mark.parametrize("data", [big_head(n_fields=1000), big_head(one_field=100 * 1024),
                                  big_head(n_fields=370), big_head(n_fields=150)],
                         ids=["100k_many_fields", "100k_one_field", "5x_limit", "2x_limit"])
def test_header_section_over_limit_431(upstream, start_sluice, data):
    """client.max_header_size is 8k; beyond it, also far beyond (more than 4x), the answer
    is 431 header_too_large from sluice, then the connection is closed. Sent in 4 KiB
    pieces, stopping once sluice has answered."""
    s = start_sluice(upstream.url)
    pieces = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    refused(upstream, s, data, status=431, reason="header_too_large", pieces=pieces)


# --------------------------------------------------------------------------- 13. pipelining

def test_two_valid_pipelined_requests_answered_in_order(upstream, start_sluice):
    s = start_sluice(upstream.url)
    data = (head("GET /api/p1 HTTP/1.1", "Host: a")
            + head("POST /api/p2 HTTP/1.1", "Host: a", "Content-Length: 3", body="abc")
            + head("GET /api/p3 HTTP/1.1", "Host: a", "Connection: close"))
    ex = strictutil.exchange(s.port, data)
    p = []
    if ex.statuses() != [200, 200, 200] or ex.rest:
        p.append("client: expected three 200s, got %r" % ex)
    else:
        got = [r.json()["target"] for r in ex.responses]
        if got != ["/p1", "/p2", "/p3"]:
            p.append("client: answers out of order: %r" % got)
    p += strictutil.upstream_problems(upstream, s.port, expect=["/p1", "/p2", "/p3"])
    strictutil.check(p)


@pytest.mark.parametrize("bad", [head("GET /api/p2 HTTP/1.1", "Host: a", "X Bad: 1"),
                                 b"POST /api/p2 HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n"
                                 b"\r\nhello",
                                 head("GET /api/p2 HTTP/1.2", "Host: a")],
                         ids=["bad_field_name", "bad_content_length_name", "bad_version"])
def test_valid_then_invalid_pipelined(upstream, start_sluice, bad):
    """The first is answered normally, the second gets 400 and the connection closes;
    a third behind it is neither answered nor forwarded."""
    s = start_sluice(upstream.url)
    data = (head("GET /api/p1 HTTP/1.1", "Host: a") + bad
            + head("GET /api/p3 HTTP/1.1", "Host: a"))
    ex = strictutil.exchange(s.port, data, until=lambda rs: len(rs) >= 2 and
                             rs[1].status != 400)
    p = []
    if not ex.responses or ex.responses[0].status != 200:
        p.append("client: first answer should be the upstream's 200: %r" % ex)
    else:
        if ex.responses[0].json()["target"] != "/p1":
            p.append("client: first answer is not /p1's: %r" % ex.responses[0])
        rest = strictutil.Exchange(ex.data, ex.responses[1:], ex.rest, ex.error, ex.end,
                                   ex.elapsed)
        p += strictutil.refused_problems(rest)
    p += strictutil.upstream_problems(upstream, s.port, expect=["/p1"])
    strictutil.check(p)


REFUSED_WITH_ONE_BEHIND = [
    ("field_name", head("GET /api/x HTTP/1.1", "Host: a", "X Bad: 1")),
    ("target_cr", b"GET /api/crt\rX-Injected: yes HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("no_host", b"GET /api/x HTTP/1.1\r\n\r\n"),
    ("obs_fold", head("GET /api/x HTTP/1.1", "Host: a", "X-A: a", " b")),
    ("version", head("GET /api/x HTTP/1.2", "Host: a")),
    ("content_length", post("Content-Length: 5, 5")),
    ("chunk_size", chunked_post(b"0x3\r\nabc\r\n0\r\n\r\n")),
    ("transfer_encoding", head("POST /api/x HTTP/1.1", "Host: a",
                               "Transfer-Encoding: gzip, chunked", body="5\r\nhello\r\n0\r\n\r\n")),
    ("path", head("GET /api/..;/x HTTP/1.1", "Host: a")),
]


@cases(REFUSED_WITH_ONE_BEHIND)
def test_request_behind_a_refused_one_is_dropped(upstream, start_sluice, data):
    """A valid request pipelined behind a refused one is neither answered nor forwarded."""
    s = start_sluice(upstream.url)
    refused(upstream, s, data + head("GET /api/behind HTTP/1.1", "Host: a"))
