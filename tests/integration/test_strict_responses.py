"""Strict HTTP/1.1 at the upstream edge (issue 8): what sluice does with an upstream answer
that is not valid HTTP, or that carries bytes beyond its end.

The upstream answers with exact bytes (harness Upstream.script, path .../raw?s=NAME).
An answer that is not valid HTTP gets 502 `Sluice-Reason: upstream_invalid`. The POOL
rule: after each trigger a second client B, on a new client connection, sends its own
request and must get its own answer (the echo JSON naming /b and B's own upstream
connection); wherever the trigger leaves the upstream connection poisoned (stray bytes,
unknown framing, another protocol, or any HEAD/204/304 answer), B's request must arrive
on a NEW upstream connection whose first bytes are B's request. The stray bytes are
mostly a complete response (strictutil.SMUGGLED): a sluice that reused the connection
would hand it to B.

Every daemon here runs with max_in_flight 1 (A is finished before B is sent, so B could
only reuse A's connection, never race it), keepalive 4, and a rate that never delays.
Client A sends Connection: close and reads until sluice closes, so every byte sluice
relayed is seen; no socket operation waits longer than strictutil.TIMEOUT (5 s).
"""

import hashlib
import re

import pytest

import harness
import strictutil
from strictutil import SMUGGLED, head

OK5 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def pool_kw():
    """simple_config options: one request at a time, a pool, a rate that never delays."""
    return dict(rate="1000/s", burst=100, max_in_flight=1, keepalive=4)


def pool_config(upstream):
    return harness.simple_config(upstream.url, **pool_kw())


def a_then_b(s, upstream, name, *pieces, method="GET", close=False, delay=0):
    """Client A requests the scripted answer `name`; then client B, on a new connection,
    requests /api/b. Returns (A's Exchange, B's Exchange, A's target at the upstream)."""
    tail = upstream.script(name, *pieces, close=close, delay=delay)
    a = strictutil.exchange(s.port, harness.build_request(method, "/api/" + tail, "a"),
                            methods=(method,))
    b = strictutil.exchange(s.port, harness.build_request("GET", "/api/b", "b"))
    return a, b, "/" + tail


def pool_problems(upstream, a_target, b, method="GET", new_conn=True):
    """B got its own answer; A's and B's requests each reached the upstream once, as
    whole requests and nothing else; with new_conn, B's on a new upstream connection."""
    p = []
    j = None
    if b.statuses() != [200] or b.rest:
        p.append("client B: expected its own 200, got %r" % b)
    else:
        try:
            j = b.responses[0].json()
        except ValueError:
            p.append("client B: got an answer that is not its own: %r" % b.responses[0])
        if j is not None and j.get("target") != "/b":
            p.append("client B: got the answer of %r" % j.get("target"))
    reqs = upstream.requests
    a_reqs = [q for q in reqs if q.target == a_target]
    b_reqs = [q for q in reqs if q.target == "/b"]
    if len(a_reqs) != 1 or len(b_reqs) != 1:
        p.append("upstream: A's request received %d times, B's %d times (%r)"
                 % (len(a_reqs), len(b_reqs), reqs))
    heads = []
    for cid, raw in upstream.raw.items():
        got, rest = strictutil.split_requests(raw)
        heads += [h.split(b"\r\n", 1)[0] for h, _ in got]
        if rest:
            p.append("upstream: conn %d received bytes that are not a whole request: %r"
                     % (cid, rest[:300]))
    want = [("%s %s HTTP/1.1" % (method, a_target)).encode(), b"GET /b HTTP/1.1"]
    if heads != want:
        p.append("upstream: raw request lines %r, expected %r" % (heads, want))
    if a_reqs and b_reqs:
        a_conn, b_conn = a_reqs[0].conn_id, b_reqs[0].conn_id
        if j is not None and j.get("conn_id") != b_conn:
            p.append("client B: answer from connection %r, its request went on %d"
                     % (j.get("conn_id"), b_conn))
        if new_conn:
            if b_conn == a_conn:
                p.append("upstream: B's request reused A's poisoned connection %d" % a_conn)
            elif not upstream.raw[b_conn].startswith(b"GET /b HTTP/1.1\r\n"):
                p.append("upstream: B's connection %d did not start with B's request: %r"
                         % (b_conn, upstream.raw[b_conn][:200]))
    return p


def answer_problems(a, status, body=b"", reason=None):
    """A got exactly one answer: `status`, `body`, nothing after it, then the close."""
    p = []
    if a.statuses() != [status] or a.rest:
        return ["client A: expected exactly one %d, got %r" % (status, a)]
    r = a.responses[0]
    if r.body != body:
        p.append("client A: body %r, expected %r" % (r.body[:200], body[:200]))
    if r.header("sluice-reason") != reason:
        p.append("client A: Sluice-Reason %r, expected %r" % (r.header("sluice-reason"), reason))
    if not a.closed:
        p.append("client A: connection not closed after the answer (%r)" % a)
    return p


def invalid_problems(a):
    """A got sluice's 502 upstream_invalid (short text), nothing else, then the close."""
    if not a.responses:
        return ["client A: no answer: %r" % a]
    try:
        harness.assert_sluice_error(a.responses[0], 502, "upstream_invalid")
    except (AssertionError, UnicodeDecodeError) as e:
        return ["client A: %s" % e]
    if len(a.responses) > 1 or a.rest or not a.closed:
        return ["client A: more than the 502, or not closed: %r" % a]
    return []


def cases(table):
    return pytest.mark.parametrize("pieces", [c for _, c in table], ids=[n for n, _ in table])


# --------------------------------------------------------------------------- a. 1xx

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"

INTERIM = [
    ("103", (EARLY_HINTS + OK5,)),
    ("100", (b"HTTP/1.1 100 Continue\r\n\r\n" + OK5,)),
    ("102", (b"HTTP/1.1 102 Processing\r\n\r\n" + OK5,)),
    ("103_then_200_later", (EARLY_HINTS, OK5)),
    ("100_and_103", (b"HTTP/1.1 100 Continue\r\n\r\n", EARLY_HINTS, OK5)),
]


@cases(INTERIM)
def test_interim_responses_skipped(upstream, start_sluice, pieces):
    """1xx before the final answer are skipped: A gets the 200 and its body (no 1xx, and
    never a 1xx as its final answer). The connection is clean afterwards."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "interim", *pieces, delay=0.05)
    strictutil.check(answer_problems(a, 200, b"hello"),
                     pool_problems(upstream, target, b, new_conn=False))


# --------------------------------------------------------------------------- b. 101

def test_switching_protocols_is_invalid(upstream, start_sluice):
    """sluice forwards no Upgrade, so a 101 is not an answer it can relay: 502."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "101",
                            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n" + SMUGGLED)
    strictutil.check(invalid_problems(a), pool_problems(upstream, target, b))


# --------------------------------------------------------------------------- c, d. no body

NO_BODY = [
    ("204_stray_response", "GET", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n" + SMUGGLED, 204),
    ("304_stray_response", "GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n' + SMUGGLED,
     304),
    ("204_stray_bytes", "GET", b"HTTP/1.1 204 No Content\r\n\r\nhello", 204),
    ("304_stray_bytes", "GET", b"HTTP/1.1 304 Not Modified\r\n\r\nhello", 304),
    ("204_clean", "GET", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 204),
    ("304_clean", "GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n', 304),
    ("304_content_length_clean", "GET",
     b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304),
    ("head_stray_5_bytes", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200),
    ("head_stray_response", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + SMUGGLED,
     200),
    ("head_clean", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200),
    ("head_chunked_clean", "HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     200),
]


@pytest.mark.parametrize("method,data,status", [c[1:] for c in NO_BODY],
                         ids=[c[0] for c in NO_BODY])
def test_bodiless_answer_relayed_and_connection_not_reused(upstream, start_sluice, method,
                                                           data, status):
    """A gets the 204/304/HEAD head with no body (stray bytes are never relayed), and the
    upstream connection is not reused after ANY HEAD/204/304 answer, stray bytes or not."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "nobody", data, method=method)
    strictutil.check(answer_problems(a, status), pool_problems(upstream, target, b, method))


# --------------------------------------------------------------------------- e. beyond length

@pytest.mark.parametrize("extra", [b"EXTRA", SMUGGLED], ids=["bytes", "response"])
def test_bytes_beyond_content_length(upstream, start_sluice, extra):
    """A gets exactly the Content-Length bytes; the rest is never relayed, to A or to B."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "beyond", OK5 + extra)
    strictutil.check(answer_problems(a, 200, b"hello"), pool_problems(upstream, target, b))


# --------------------------------------------------------------------------- f. framing

def ok_head(*fields, version="1.1"):
    return head("HTTP/%s 200 OK" % version, "Content-Type: text/plain", *fields)


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"

FRAMING = [
    ("two_lengths_different", ok_head("Content-Length: 5", "Content-Length: 6") + b"hello!"),
    ("two_lengths_same", ok_head("Content-Length: 5", "Content-Length: 5") + b"hello"),
    ("length_list", ok_head("Content-Length: 5, 5") + b"hello"),
    ("length_plus", ok_head("Content-Length: +5") + b"hello"),
    ("length_junk", ok_head("Content-Length: 5x") + b"hello"),
    ("length_negative", ok_head("Content-Length: -5") + b"hello"),
    ("length_and_chunked", ok_head("Content-Length: 5", "Transfer-Encoding: chunked")
     + CHUNKED_HELLO),
    ("gzip_chunked", ok_head("Transfer-Encoding: gzip, chunked") + CHUNKED_HELLO),
    ("chunked_in_http10", ok_head("Transfer-Encoding: chunked", version="1.0") + CHUNKED_HELLO),
]


@pytest.mark.parametrize("data", [c for _, c in FRAMING], ids=[n for n, _ in FRAMING])
def test_ambiguous_framing_is_invalid(upstream, start_sluice, data):
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "framing", data)
    strictutil.check(invalid_problems(a), pool_problems(upstream, target, b))


# --------------------------------------------------------------------------- g. status

STATUSES = [
    ("999999999999", b"HTTP/1.1 999999999999 Big\r\n"),
    ("600", b"HTTP/1.1 600 Six\r\n"),
    ("099", b"HTTP/1.1 099 Low\r\n"),
    ("2000", b"HTTP/1.1 2000 Long\r\n"),
    ("20", b"HTTP/1.1 20 Short\r\n"),
    ("abc", b"HTTP/1.1 abc Letters\r\n"),
    ("missing", b"HTTP/1.1\r\n"),
    ("empty", b"HTTP/1.1  OK\r\n"),
]


def status_answer(line):
    return line + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("line", [c for _, c in STATUSES], ids=[n for n, _ in STATUSES])
def test_bad_status_code_is_invalid(upstream, start_sluice, line):
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "status", status_answer(line))
    strictutil.check(invalid_problems(a), pool_problems(upstream, target, b))


def test_bad_status_codes_never_reach_metrics(upstream, sluice_factory):
    """Every status label in /metrics is a real status, 100..599 (no -727379969, the
    int32 of 999999999999)."""
    admin_port = harness.free_port()
    cfg = pool_config(upstream)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    s = sluice_factory(cfg)
    harness.wait_until(lambda: harness.port_accepts(admin_port), 5.0, what="admin listener")
    p = []
    for name, line in STATUSES:
        tail = upstream.script(name, status_answer(line))
        a = strictutil.exchange(s.port, harness.build_request("GET", "/api/" + tail, "a"))
        p += ["%s: %s" % (name, x) for x in invalid_problems(a)]
    m = harness.http_request(admin_port, "GET", "/metrics")
    text = m.body.decode("utf-8", "replace")
    labels = re.findall(r'[{,]status="([^"]*)"', text)
    bad = sorted({v for v in labels if not (v.isdigit() and 100 <= int(v) <= 599)})
    if bad:
        p.append("metrics: status labels outside 100..599: %r" % bad)
    if "-727379969" in text:
        p.append("metrics: the int32 of 999999999999 appears")
    if not labels:
        p.append("metrics: no status label at all: %r" % text[:500])
    p += strictutil.upstream_problems(upstream, s.port,
                                      expect=["/raw?s=%s" % n for n, _ in STATUSES])
    strictutil.check(p)


# --------------------------------------------------------------------------- h. field lines

FIELD_LINES = [
    ("space_in_name", b"Bad Name: x"),
    ("space_before_colon", b"X-Foo : y"),
    ("empty_name", b": x"),
    ("nul_in_value", b"X-A: a\x00b"),
    ("obs_fold", b"X-A: a\r\n b"),
]


@pytest.mark.parametrize("field", [c for _, c in FIELD_LINES], ids=[n for n, _ in FIELD_LINES])
def test_invalid_response_field_line_is_invalid(upstream, start_sluice, field):
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "field",
                            ok_head(field, "Content-Length: 5") + b"hello")
    strictutil.check(invalid_problems(a), pool_problems(upstream, target, b))


# --------------------------------------------------------------------------- i. header size

def big_field_answer(n):
    return ok_head(b"X-Big: " + b"h" * n, "Content-Length: 2") + b"ok"


def test_response_header_over_upstream_max_header_size(upstream, sluice_factory):
    """upstreams.api.max_header_size: 4k; an 8 KiB header section is invalid: 502."""
    cfg = pool_config(upstream)
    cfg["upstreams"]["api"]["max_header_size"] = "4k"
    s = sluice_factory(cfg)
    a, b, target = a_then_b(s, upstream, "big", big_field_answer(8 * 1024))
    strictutil.check(invalid_problems(a), pool_problems(upstream, target, b))


def test_huge_response_header_bounded(upstream, start_sluice):
    """Default limit (16k): a 200 KiB header is invalid (502), and 20 of them do not grow
    sluice's RSS by more than 4 MiB (under ASan freed memory sits in quarantine, so the
    RSS counts every byte allocated: what is read beyond the limit is not buffered)."""
    s = start_sluice(upstream.url, **pool_kw())
    tail = upstream.script("huge", big_field_answer(200 * 1024), close=True)
    wrong = []

    def one():
        a = strictutil.exchange(s.port, harness.build_request("GET", "/api/" + tail, "a"))
        wrong.extend(invalid_problems(a))

    one()
    one()
    base = s.rss_kib()
    for _ in range(20):
        one()
    growth_mib = (s.rss_kib() - base) / 1024.0
    p = []
    if wrong:
        p.append("%d of 22 answers were not sluice's 502 upstream_invalid; the first: %s"
                 % (len(wrong), wrong[0]))
    if growth_mib > 4:
        p.append("sluice RSS grew by %.1f MiB over 20 answers with a 200 KiB header"
                 % growth_mib)
    b = strictutil.exchange(s.port, harness.build_request("GET", "/api/b", "b"))
    if b.statuses() != [200] or b.responses[0].json().get("target") != "/b":
        p.append("client B: expected its own 200, got %r" % b)
    p += strictutil.upstream_problems(upstream, s.port, expect=["/" + tail] * 22 + ["/b"],
                                      sync=False)
    strictutil.check(p)


# --------------------------------------------------------------------------- j. bad chunks

CHUNKED_HEAD = ok_head("Transfer-Encoding: chunked") + b"4\r\ngood\r\n"

BAD_CHUNKS = [
    ("size_0x", b"0x3\r\nxyz\r\n0\r\n\r\n"),
    ("size_leading_space", b" 3\r\nxyz\r\n0\r\n\r\n"),
    ("size_not_hex", b"ZZZ\r\nxyz\r\n0\r\n\r\n"),
    # the bytes after the chunk look like hex: a lax reader takes them for a size and waits
    ("chunk_not_followed_by_crlf", b"3\r\nxyzdef\r\n0\r\n\r\n"),
    ("chunk_longer_than_size", b"3\r\nxyzXY\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("bad", [c for _, c in BAD_CHUNKS], ids=[n for n, _ in BAD_CHUNKS])
def test_bad_chunk_after_head_cuts_client(upstream, start_sluice, bad):
    """The head (and a first good chunk) is relayed before the bad chunk arrives (0.1 s
    later), so A's connection is closed before its body completes: A sees an incomplete
    response (no terminating chunk), never a complete-looking one, and promptly."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "badchunk", CHUNKED_HEAD, bad, delay=0.1)
    p = []
    if a.responses:
        p.append("client A: got a complete-looking response: %r" % a)
    elif not a.data.startswith(b"HTTP/1.1 200"):
        p.append("client A: the head was not relayed: %r" % a)
    if not a.closed:
        p.append("client A: connection not closed (%r)" % a)
    strictutil.check(p, pool_problems(upstream, target, b))


# --------------------------------------------------------------------------- k. valid shapes

def test_response_chunk_extension_ignored(upstream, start_sluice):
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "ext", ok_head("Transfer-Encoding: chunked")
                            + b"3;x=y\r\nabc\r\n2 ; q=\"a;b\"\r\nde\r\n0\r\n\r\n")
    strictutil.check(answer_problems(a, 200, b"abcde"),
                     pool_problems(upstream, target, b, new_conn=False))


BODY = harness.pattern_bytes(150000)

CLOSE_DELIMITED = [
    ("plain", ok_head()),
    ("keep_alive", ok_head("Connection: keep-alive")),
    ("http10", head("HTTP/1.0 200 OK", "Content-Type: application/octet-stream")),
]


@pytest.mark.parametrize("hd", [c for _, c in CLOSE_DELIMITED],
                         ids=[n for n, _ in CLOSE_DELIMITED])
def test_close_delimited_body_arrives_whole(upstream, start_sluice, hd):
    """No Content-Length, no Transfer-Encoding: the body ends when the upstream closes,
    whatever its Connection header says; A gets all of it."""
    s = start_sluice(upstream.url, **pool_kw())
    a, b, target = a_then_b(s, upstream, "closedelim", hd, BODY[:50000], BODY[50000:100000],
                            BODY[100000:], close=True, delay=0.02)
    p = []
    if a.statuses() != [200] or a.rest or not a.closed:
        p.append("client A: expected one whole 200, got %r" % a)
    elif a.responses[0].body != BODY:
        p.append("client A: body of %d bytes (sha256 %s), expected %d"
                 % (len(a.responses[0].body),
                    hashlib.sha256(a.responses[0].body).hexdigest()[:12], len(BODY)))
    strictutil.check(p, pool_problems(upstream, target, b))
