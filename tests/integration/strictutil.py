"""
Helpers for the strict-HTTP tests (test_strict_requests.py, test_strict_responses.py):
send exact bytes, see exactly what came back and how the connection ended, and check
what the upstream received, byte for byte.

  head()                 request or response bytes from lines (CRLF added) and a body
  exchange()             bytes on a new connection; read until the server closes it, or
                         until a condition holds, or `timeout`; -> Exchange
  parse_stream()         split received bytes into responses, and what is left over
  split_requests()       the same for what the upstream received (requests)
  upstream_problems()    after a sync request: what the upstream received beyond it
  refused_problems()     a refused request's answer: status, reason, short text, closed

Problems are returned as lists of strings so that a test can check the client side and
the upstream side both, and report both, before failing.
"""

import http.client
import io
import re
import select
import socket
import time

import harness

TIMEOUT = 5.0  # every socket operation; client.timeout and timeouts.response are longer

# A complete response, used as the stray bytes an upstream sends beyond the end of an
# answer: if sluice gave the connection to another request, that request would get it.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"


def head(*lines, body=b""):
    """lines joined with CRLF, then the empty line, then body (bytes or str, latin-1)."""
    enc = [x if isinstance(x, bytes) else x.encode("latin-1") for x in lines]
    return b"\r\n".join(enc) + b"\r\n\r\n" + (body if isinstance(body, bytes)
                                              else body.encode("latin-1"))


class Exchange:
    """What came back on one connection.

    responses   complete responses, in order (1xx included, each as its own)
    rest        bytes after the last complete response (b"" when none)
    error       why `rest` does not parse as a response (None when rest is empty)
    end         "eof" | "reset" (the server closed) | "timeout" | "stopped" (until held)
    elapsed     seconds from the send to the end
    data        every byte received
    """

    def __init__(self, data, responses, rest, error, end, elapsed):
        self.data = data
        self.responses = responses
        self.rest = rest
        self.error = error
        self.end = end
        self.elapsed = elapsed

    @property
    def closed(self):
        return self.end in ("eof", "reset")

    def statuses(self):
        return [r.status for r in self.responses]

    def __repr__(self):
        return ("Exchange(end=%s after %.2fs, responses=%r, rest=%r, error=%s)"
                % (self.end, self.elapsed, self.responses, self.rest[:300], self.error))


def parse_stream(data, methods=("GET",)):
    """(responses, rest, error): the complete responses at the start of data (the i-th
    parsed as the answer to methods[i], the last method repeating), then what is left."""
    f = io.BytesIO(data)
    out, pos = [], 0
    while pos < len(data):
        method = methods[min(len(out), len(methods) - 1)]
        try:
            r = harness.read_response(f, method)
        except (ConnectionError, ValueError, IndexError) as e:
            return out, data[pos:], "%s: %s" % (type(e).__name__, e)
        out.append(r)
        pos = f.tell()
    return out, b"", None


def exchange(port, data, methods=("GET",), timeout=TIMEOUT, until=None, pieces=None):
    """Send data (or each of `pieces`, stopping early when the server has answered) on a
    new connection, then read until the server closes it, until(responses) is true, or
    `timeout` seconds pass. A reset is an end like EOF: what arrived before it counts."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    buf = bytearray()
    end = None
    with harness.connect(port, timeout) as s:
        try:
            for piece in (pieces if pieces is not None else [data]):
                s.sendall(piece)
                if pieces is not None and _readable(s):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: read what it sent
        while end is None:
            left = deadline - time.monotonic()
            if left <= 0:
                end = "timeout"
                break
            s.settimeout(left)
            try:
                got = s.recv(65536)
            except socket.timeout:
                end = "timeout"
                break
            except ConnectionResetError:
                end = "reset"
                break
            if not got:
                end = "eof"
                break
            buf += got
            if until is not None and until(parse_stream(bytes(buf), methods)[0]):
                end = "stopped"
    data = bytes(buf)
    responses, rest, error = parse_stream(data, methods)
    return Exchange(data, responses, rest, error, end, time.monotonic() - t0)


def _readable(sock):
    return bool(select.select([sock], [], [], 0)[0])


def wrong_first(status):
    """An `until` for exchange(): stop at once when the first answer is not `status`
    (the test fails anyway; no need to wait for the connection to close)."""
    return lambda rs: bool(rs) and rs[0].status != status


def refused_problems(ex, status=400, reason="bad_request", max_seconds=None):
    """The client side of a refused request: exactly one answer, `status` with
    Sluice-Reason `reason` and a short text body, then the connection closed (nothing
    after the answer, in particular no answer to a request pipelined behind it)."""
    p = []
    if not ex.responses:
        p.append("client: no answer (%r)" % ex)
        return p
    r = ex.responses[0]
    try:
        harness.assert_sluice_error(r, status, reason)
    except (AssertionError, UnicodeDecodeError) as e:
        p.append("client: %s" % e)
        return p
    if len(ex.responses) > 1 or ex.rest:
        p.append("client: more than one answer or stray bytes after the %d: %r" % (status, ex))
    if not ex.closed:
        p.append("client: connection not closed after the %d (%s after %.1fs)"
                 % (status, ex.end, ex.elapsed))
    if max_seconds is not None and ex.elapsed > max_seconds:
        p.append("client: answered/closed after %.1fs (> %.1fs)" % (ex.elapsed, max_seconds))
    return p


# --------------------------------------------------------------------------- upstream side

def split_requests(raw):
    """(requests, rest): raw bytes received by the upstream split into (head, body)
    pairs (Content-Length or chunked bodies), then what does not form a whole request."""
    out, pos = [], 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, raw[pos:]
        hd = raw[pos:end + 4]
        fields = hd.decode("latin-1").lower()
        m = re.search(r"\r\ncontent-length:\s*(\d+)\s*\r\n", fields)
        body_start = end + 4
        if re.search(r"\r\ntransfer-encoding:[^\r]*chunked", fields):
            p = body_start
            while True:
                le = raw.find(b"\r\n", p)
                if le < 0:
                    return out, raw[pos:]
                try:
                    size = int(raw[p:le].split(b";")[0], 16)
                except ValueError:
                    return out, raw[pos:]
                if size == 0:
                    te = raw.find(b"\r\n\r\n", le)
                    if te < 0:
                        return out, raw[pos:]
                    p = te + 4
                    break
                p = le + 2 + size + 2
            out.append((hd, raw[body_start:p]))
            pos = p
        else:
            n = int(m.group(1)) if m else 0
            if body_start + n > len(raw):
                return out, raw[pos:]
            out.append((hd, raw[body_start:body_start + n]))
            pos = body_start + n
    return out, b""


def upstream_problems(upstream, port, expect=(), sync=True, host=None):
    """The upstream side: send a valid request (GET /api/sync) on a new client
    connection; once the upstream has it, the upstream must have received exactly the
    requests whose targets are `expect`, then /sync, each exactly once, on any
    connections, and not one byte more (raw bytes, not only parsed requests). The sync
    request carries Host `host` (default 127.0.0.1:port). Returns a list of problems."""
    p = []
    want = list(expect)
    if sync:
        want.append("/sync")
        try:
            r = harness.http_request(port, "GET", "/api/sync", timeout=TIMEOUT, host=host)
            if r.status != 200:
                p.append("sync request answered %r" % r)
        except (OSError, http.client.HTTPException) as e:
            p.append("sync request failed: %r" % e)
        try:
            upstream.wait_for(len(want), timeout=TIMEOUT)
        except AssertionError as e:
            p.append("upstream: %s" % e)
    got = [q.target for q in upstream.requests]
    if got != want:
        p.append("upstream: received requests %r, expected %r" % (got, want))
    heads = []
    for cid, raw in upstream.raw.items():
        reqs, rest = split_requests(raw)
        heads += [h.split(b"\r\n", 1)[0] for h, _ in reqs]
        if rest:
            p.append("upstream: conn %d received bytes that are not a whole request: %r"
                     % (cid, rest[:300]))
    if len(heads) != len(want):
        p.append("upstream: raw bytes hold %d requests %r, expected %d"
                 % (len(heads), heads, len(want)))
    if upstream.errors:
        p.append("upstream: could not parse what it received: %r" % upstream.errors)
    return p


def check(*problem_lists):
    """Fail with every problem of every list (client side and upstream side together),
    each cut to 1500 characters (a response with a 200 KiB header is not printed whole)."""
    problems = [x if len(x) <= 1500 else x[:1500] + "...(%d more)" % (len(x) - 1500)
                for lst in problem_lists for x in lst]
    assert not problems, "\n".join(problems)
