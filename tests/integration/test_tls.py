"""TLS, with real parts only: a test CA and certificates made by `openssl` at session start
(tlsutil.Pki), HTTPS upstreams served by Python's ssl module, curl and http.client as
HTTPS clients of sluice's TLS listener, and `sluice -t` on configs naming bad files.

Covered:
  - verified HTTPS upstreams by name (SNI + DNS SAN) and by IP (IP SAN, no SNI)
  - refusals, each a 502 with its Sluice-Reason and the cause in the log: unknown CA,
    wrong name, expired certificate, upstream requiring a client certificate, protocol
    versions
  - verify: false (answers, warns at start), mTLS, server_name, keep-alive reuse of TLS
    connections, a pooled TLS connection closed by the upstream
  - TLS listeners (X-Forwarded-Proto), keep-alive on them
  - bad certificates, keys and CA files found by `sluice -t` with FILE:LINE:COL
"""

import collections
import hashlib
import http.client
import json
import ssl

import pytest

import harness
import tlsutil

VERIFY = "tls_verify_failed"
HANDSHAKE = "tls_handshake_failed"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return tlsutil.Pki(tmp_path_factory.mktemp("pki")).build()


@pytest.fixture
def make_tls_upstream(pki):
    """make(cert="server", client_ca=None, max_version=None, strict=False): a started
    HTTPS upstream (tlsutil.TlsUpstream, or tlsutil.StrictTlsServer when strict)."""
    made = []

    def make(cert="server", client_ca=None, max_version=None, strict=False):
        cls = tlsutil.StrictTlsServer if strict else tlsutil.TlsUpstream
        u = cls(pki, cert=cert, client_ca=client_ca, max_version=max_version).start()
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


def tls_config(url, tls=None, **kw):
    """harness.simple_config for an https upstream "api" behind /api/, with `tls`."""
    kw.setdefault("limits", [{"rate": "100/s", "burst": 10}])
    cfg = harness.simple_config(url, **kw)
    if tls is not None:
        cfg["upstreams"]["api"]["tls"] = tls
    return cfg


def url_for(u, host):
    return "https://%s:%d" % (host, u.port)


def log_line(s, *words, timeout=5.0):
    """The first line of s's stderr that holds every word (waits for it to be written)."""
    def find():
        for line in s.stderr().splitlines():
            if all(w in line for w in words):
                return line
        return None
    try:
        return harness.wait_until(find, timeout, what="log line with %r" % (words,))
    except AssertionError:
        raise AssertionError("no log line with %r in:\n%s" % (words, s.stderr()[-3000:]))


def get(s, path="/api/x", **kw):
    return harness.http_request(s.port, "GET", path, **kw)


def assert_refused(s, u, reason, cause, n=3):
    """n requests are each answered 502 `reason` and never reach the upstream; the log
    line of each names the request, the upstream and the cause."""
    got = [get(s, "/api/refused/%d" % i) for i in range(n)]
    for r in got:
        harness.assert_sluice_error(r, 502, reason)
        assert cause in r.body.decode(), "error body should name the cause %r: %r" % (cause, r)
    line = log_line(s, "502", reason, cause)
    assert "req=" in line and "upstream=api" in line, line
    assert u.count == 0, "no request may reach an upstream that failed TLS: %r" % u.requests


# --------------------------------------------------------------------------- success

@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_verified_upstream(pki, make_tls_upstream, sluice_factory, host):
    """With the right CA: 200 and the upstream's body, by name (checked against the DNS
    SAN, sent as SNI) and by IP (checked against the IP SAN; no SNI for an address)."""
    u = make_tls_upstream()
    s = sluice_factory(tls_config(url_for(u, host), {"ca_file": pki.path("ca.pem")}))
    r = get(s, "/api/hello?q=1")
    assert r.status == 200, r
    body = r.json()
    assert body["method"] == "GET" and body["target"] == "/hello?q=1", body
    req = u.wait_for(1)[0]
    assert req.target == "/hello?q=1"
    assert req.header("x-forwarded-proto") == "http"
    assert u.sni_seen == ([host] if host == "localhost" else [None]), u.sni_seen
    conn = u.tls_conns[req.conn_id]
    assert conn["version"] == "TLSv1.3", conn
    assert conn["client_cert"] is None
    assert "verify is false" not in s.stderr()


def test_bodies_over_tls(pki, make_tls_upstream, sluice_factory):
    """Request and response bodies cross the TLS hop intact: a 300 KB upload echoed,
    a 3 MB Content-Length answer and a 2 MB chunked one, checked by sha256."""
    u = make_tls_upstream()
    s = sluice_factory(tls_config(u.url, {"ca_file": pki.path("ca.pem")}))
    up = harness.pattern_bytes(300000)
    r = harness.http_request(s.port, "POST", "/api/echo", body=up)
    assert r.status == 200 and r.body == up, (r.status, len(r.body))
    r = get(s, "/api/big?bytes=3000000")
    assert r.status == 200 and len(r.body) == 3000000, (r.status, len(r.body))
    assert hashlib.sha256(r.body).hexdigest() == harness.pattern_sha256(3000000)
    r = get(s, "/api/stream?bytes=2000000&piece=70000")
    assert r.status == 200 and len(r.body) == 2000000, (r.status, len(r.body))
    assert hashlib.sha256(r.body).hexdigest() == harness.pattern_sha256(2000000)


def test_server_name_overrides_url_host(pki, make_tls_upstream, sluice_factory):
    """tls.server_name is what is checked and sent as SNI, whatever host the url
    connects to: a certificate for example.com only, reached at 127.0.0.1, passes."""
    u = make_tls_upstream(cert="example")
    s = sluice_factory(tls_config(u.url, {"ca_file": pki.path("ca.pem"),
                                          "server_name": "example.com"}))
    r = get(s)
    assert r.status == 200, r
    assert u.sni_seen == ["example.com"], u.sni_seen


# --------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("case", ["ca_file_of_other_ca", "system_store", "server_of_other_ca"])
def test_unknown_ca(pki, make_tls_upstream, sluice_factory, case):
    """A certificate chain that does not lead to a trusted CA: 502 tls_verify_failed."""
    if case == "ca_file_of_other_ca":
        u, tls = make_tls_upstream(), {"ca_file": pki.path("other-ca.pem")}
    elif case == "system_store":
        u, tls = make_tls_upstream(), None  # no tls section: the system trust store
    else:
        u, tls = make_tls_upstream(cert="other"), {"ca_file": pki.path("ca.pem")}
    s = sluice_factory(tls_config(url_for(u, "localhost"), tls))
    assert_refused(s, u, VERIFY, "unable to get local issuer certificate")


@pytest.mark.parametrize("case,cause", [
    ("server_name_example.com", "hostname mismatch"),
    ("cert_for_example.com_by_name", "hostname mismatch"),
    ("cert_for_example.com_by_ip", "IP address mismatch"),
])
def test_wrong_name(pki, make_tls_upstream, sluice_factory, case, cause):
    """A trusted certificate for another name: 502 tls_verify_failed."""
    ca = {"ca_file": pki.path("ca.pem")}
    if case == "server_name_example.com":
        u = make_tls_upstream()
        cfg = tls_config(url_for(u, "localhost"), dict(ca, server_name="example.com"))
    elif case == "cert_for_example.com_by_name":
        u = make_tls_upstream(cert="example")
        cfg = tls_config(url_for(u, "localhost"), ca)
    else:
        u = make_tls_upstream(cert="example")
        cfg = tls_config(url_for(u, "127.0.0.1"), ca)
    s = sluice_factory(cfg)
    assert_refused(s, u, VERIFY, cause)


def test_expired_certificate(pki, make_tls_upstream, sluice_factory):
    """A certificate from the right CA for the right name, valid only in January 2020."""
    u = make_tls_upstream(cert="expired")
    s = sluice_factory(tls_config(url_for(u, "localhost"), {"ca_file": pki.path("ca.pem")}))
    assert_refused(s, u, VERIFY, "certificate has expired")


@pytest.mark.parametrize("cert", ["other", "expired", "example"])
def test_verify_false(pki, make_tls_upstream, sluice_factory, cert):
    """verify: false answers 200 from an upstream whose certificate would fail (unknown
    CA, expired, wrong name), and says so in a warning at start, before any request."""
    u = make_tls_upstream(cert=cert)
    s = sluice_factory(tls_config(url_for(u, "localhost"),
                                  {"ca_file": pki.path("ca.pem"), "verify": False}))
    warn = log_line(s, "verify", "false", timeout=0)
    assert " warn " in warn and "api" in warn and "NOT" in warn, warn
    assert "req=" not in s.stderr(), "the warning must come at start:\n" + s.stderr()
    for i in range(3):
        r = get(s, "/api/v/%d" % i)
        assert r.status == 200, r
    assert u.count == 3


# --------------------------------------------------------------------------- mTLS

@pytest.mark.parametrize("strict", [False, True], ids=["asyncio", "strict"])
def test_mtls_with_client_cert(pki, make_tls_upstream, sluice_factory, strict):
    """An upstream that requires a client certificate signed by the CA gets sluice's."""
    u = make_tls_upstream(client_ca=pki.path("ca.pem"), strict=strict)
    s = sluice_factory(tls_config(u.url, {"ca_file": pki.path("ca.pem"),
                                          "cert": pki.path("client.pem"),
                                          "key": pki.path("client.key")}))
    for i in range(3):
        r = get(s, "/api/m/%d" % i)
        assert r.status == 200, r
    conns = {u.requests[i].conn_id for i in range(3)}
    for c in conns:
        assert u.tls_conns[c]["client_cert"] == {"commonName": "sluice test client"}, \
            u.tls_conns


# (id, strict server, max TLS version of the upstream, client cert, server's alert in the log)
MTLS_REFUSED = [
    ("tls1.3-no-cert-alert", True, None, None, "certificate required"),
    ("tls1.2-no-cert-alert", True, ssl.TLSVersion.TLSv1_2, None, "handshake failure"),
    ("tls1.3-cert-of-other-ca-alert", True, None, "other", "unknown ca"),
    ("tls1.2-cert-of-other-ca-alert", True, ssl.TLSVersion.TLSv1_2, "other", "unknown ca"),
    ("tls1.3-no-cert-closed", False, None, None, "unexpected eof"),
    ("tls1.2-no-cert-closed", False, ssl.TLSVersion.TLSv1_2, None, "unexpected eof"),
]


# Enough tries that a reason which depends on timing shows (about 5 ms each).
MTLS_TRIES = 40


@pytest.mark.parametrize("case", MTLS_REFUSED, ids=[c[0] for c in MTLS_REFUSED])
def test_mtls_refused(pki, make_tls_upstream, sluice_factory, case):
    """An upstream that requires a client certificate refuses sluice without one (or with
    one from another CA): every request gets 502 tls_handshake_failed, every time.
    "alert": the upstream refuses with a TLS alert and closes, as OpenSSL servers do; in
    TLS 1.3 that comes after the client's side of the handshake is complete (it may race
    libevent's "connected"), and is still a handshake failure, not a connect failure.
    "closed": the upstream closes without an alert (asyncio's SSL transport)."""
    _, strict, maxv, cert, alert = case
    u = make_tls_upstream(client_ca=pki.path("ca.pem"), max_version=maxv, strict=strict)
    tls = {"ca_file": pki.path("ca.pem")}
    if cert:
        tls.update(cert=pki.path(cert + ".pem"), key=pki.path(cert + ".key"))
    s = sluice_factory(tls_config(u.url, tls))
    got = [get(s, "/api/m/%d" % i) for i in range(MTLS_TRIES)]
    summary = [(r.status, r.header("sluice-reason")) for r in got]
    odd = [r for r in got if r.header("sluice-reason") != HANDSHAKE]
    assert not odd, "expected %d x (502, %s), got %s\nfirst odd one: %r" % (
        MTLS_TRIES, HANDSHAKE, collections.Counter(summary), odd[0])
    for r in got:
        harness.assert_sluice_error(r, 502, HANDSHAKE)
    log_line(s, "502", HANDSHAKE, "TLS handshake failed", alert)
    assert u.count == 0
    if strict:
        errs = u.wait_handshake_errors(MTLS_TRIES)
        assert all("CERTIFICATE" in e or "certificate" in e for e in errs), errs


# --------------------------------------------------------------------------- versions

# (id, min_version in sluice, upstream max version, strict, expected status / version)
VERSIONS = [
    ("1.3-vs-1.2-only-alert", "1.3", ssl.TLSVersion.TLSv1_2, True, 502),
    ("1.3-vs-1.2-only-closed", "1.3", ssl.TLSVersion.TLSv1_2, False, 502),
    ("1.3-vs-1.3", "1.3", None, False, "TLSv1.3"),
    ("1.2-vs-1.2-only", "1.2", ssl.TLSVersion.TLSv1_2, False, "TLSv1.2"),
]


@pytest.mark.parametrize("case", VERSIONS, ids=[c[0] for c in VERSIONS])
def test_min_version(pki, make_tls_upstream, sluice_factory, case):
    """min_version: 1.3 against an upstream that stops at TLS 1.2 is a 502
    tls_handshake_failed; otherwise the newest common version is used."""
    _, minv, maxv, strict, want = case
    u = make_tls_upstream(max_version=maxv, strict=strict)
    s = sluice_factory(tls_config(u.url, {"ca_file": pki.path("ca.pem"), "min_version": minv}))
    if want == 502:
        got = [get(s, "/api/v/%d" % i) for i in range(3)]
        for r in got:
            harness.assert_sluice_error(r, 502, HANDSHAKE)
        log_line(s, "502", HANDSHAKE)
        if strict:
            log_line(s, "502", HANDSHAKE, "protocol version")
        assert u.count == 0
    else:
        r = get(s)
        assert r.status == 200, r
        req = u.requests[0]
        assert u.tls_conns[req.conn_id]["version"] == want, u.tls_conns


# --------------------------------------------------------------------------- reuse

def test_tls_connection_reuse(pki, make_tls_upstream, sluice_factory):
    """Ten sequential requests (each on a new client connection) reach the HTTPS upstream
    on one pooled TLS connection (two at most); once the upstream closes it, the next
    request is sent on a fresh TLS connection."""
    u = make_tls_upstream()
    s = sluice_factory(tls_config(url_for(u, "localhost"), {"ca_file": pki.path("ca.pem")}))
    for i in range(10):
        r = get(s, "/api/seq/%d" % i)
        assert r.status == 200, r
    reqs = u.wait_for(10)
    assert [q.path for q in reqs] == ["/seq/%d" % i for i in range(10)]
    conns = u.connection_ids()
    assert 1 <= len(conns) <= 2, "10 sequential requests used %d TLS connections: %r" % (
        len(conns), u.conn_ids())
    assert len(u.tls_conns) == len(conns) and u.connections == len(conns), \
        (u.tls_conns, u.connections)

    last = reqs[-1].conn_id
    sluice_port = u.tls_conns[last]["port"]
    u.drop_connections()
    harness.wait_until(lambda: tlsutil.tcp_side_closed(sluice_port), 5,
                       what="sluice to close its end of the dropped TLS connection")
    r = get(s, "/api/after-drop")
    assert r.status == 200, r
    after = u.wait_for(11)[-1]
    assert after.conn_id not in conns, (after, conns)


# --------------------------------------------------------------------------- listeners

def listener_config(pki, u):
    cfg = tls_config(url_for(u, "localhost"), {"ca_file": pki.path("ca.pem")})
    tls_port = harness.free_port()
    cfg["listen"].append({"address": "127.0.0.1:%d" % tls_port,
                          "tls": {"cert": pki.path("server.pem"),
                                  "key": pki.path("server.key")}})
    return cfg, tls_port


def test_https_listener_with_curl(pki, make_tls_upstream, sluice_factory):
    """curl --cacert ca.pem https://localhost:PORT/... through a TLS listener to an HTTPS
    upstream: 200, and the upstream sees X-Forwarded-Proto: https; the plain listener of
    the same daemon gives http. curl trusting another CA refuses the listener."""
    u = make_tls_upstream()
    cfg, tls_port = listener_config(pki, u)
    s = sluice_factory(cfg)
    harness.wait_until(lambda: harness.port_accepts(tls_port), 5, what="TLS listener")
    base = ["--http1.1", "--resolve", "localhost:%d:127.0.0.1" % tls_port]
    p = harness.curl(base + ["--cacert", pki.path("ca.pem"), "-D", "-",
                             "https://localhost:%d/api/over-tls?x=1" % tls_port])
    out = p.stdout.decode("latin-1")
    assert p.returncode == 0, (p.returncode, p.stderr, out)
    assert out.startswith("HTTP/1.1 200"), out
    body = json.loads(out.split("\r\n\r\n", 1)[1])
    assert body["target"] == "/over-tls?x=1", body
    req = u.wait_for(1)[0]
    assert req.header("x-forwarded-proto") == "https", req.headers

    r = get(s, "/api/over-plain")
    assert r.status == 200, r
    req = u.wait_for(2)[1]
    assert req.path == "/over-plain"
    assert req.header("x-forwarded-proto") == "http", req.headers

    p = harness.curl(base + ["--cacert", pki.path("other-ca.pem"),
                             "https://localhost:%d/api/untrusted" % tls_port])
    assert p.returncode == 60, (p.returncode, p.stderr)  # peer certificate not verified
    assert u.count == 2


def test_https_listener_keepalive(pki, make_tls_upstream, sluice_factory):
    """Several requests on one client TLS connection (http.client, verifying the
    listener's certificate for localhost)."""
    u = make_tls_upstream()
    cfg, tls_port = listener_config(pki, u)
    s = sluice_factory(cfg)
    harness.wait_until(lambda: harness.port_accepts(tls_port), 5, what="TLS listener")
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    conn = http.client.HTTPSConnection("localhost", tls_port, context=ctx,
                                       timeout=harness.DEFAULT_TIMEOUT)
    try:
        conn.connect()
        sock = conn.sock
        assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
        for i in range(3):
            conn.request("POST", "/api/echo", body=b"ping %d" % i,
                         headers={"Host": "localhost:%d" % tls_port})
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b"ping %d" % i
            assert conn.sock is sock, "the client connection should stay open"
    finally:
        conn.close()
    assert [q.header("x-forwarded-proto") for q in u.wait_for(3)] == ["https"] * 3
    assert s.alive()


# --------------------------------------------------------------------------- sluice -t

CONFIG = """\
listen:
  - address: 127.0.0.1:{port}
  - address: 127.0.0.1:{tls_port}
    tls:
      cert: {listen_cert}
      key: {listen_key}
upstreams:
  sec:
    url: https://localhost:{uport}
    limits:
      - rate: 100/s
        burst: 10
    tls:
      ca_file: {ca_file}
      server_name: localhost
      verify: true
      min_version: 1.2
      cert: {client_cert}
      key: {client_key}
routes:
  - path_prefix: /sec/
    strip_prefix: true
    upstream: sec
"""


def config_text(pki, **over):
    v = {"port": harness.free_port(), "tls_port": harness.free_port(),
         "uport": harness.free_port(),
         "listen_cert": pki.path("server.pem"), "listen_key": pki.path("server.key"),
         "ca_file": pki.path("ca.pem"),
         "client_cert": pki.path("client.pem"), "client_key": pki.path("client.key")}
    v.update({k: (pki.path(x) if not x.startswith("/") else x) for k, x in over.items()})
    return CONFIG.format(**v)


# A key that belongs to another certificate: OpenSSL already refuses it when it is loaded
# ("key values mismatch"); sluice's own check says "does not match". Either will do.
MISMATCH = ("mismatch", "does not match")

# (id, files replaced in CONFIG, needle: '|' marks the value whose LINE:COL is expected,
#  words the message must hold; a tuple: one of them)
BAD_FILES = [
    ("ca_file_missing", {"ca_file": "/nonexistent/sluice-ca.pem"},
     "ca_file: |/nonexistent/sluice-ca.pem", ["ca_file", "cannot read", "No such file"]),
    ("ca_file_is_a_directory", {"ca_file": "/"},
     "ca_file: |/\n", ["ca_file", "cannot read", "directory"]),
    ("ca_file_not_pem", {"ca_file": "garbage.pem"},
     "ca_file: |{garbage.pem}", ["ca_file", "no certificate"]),
    ("ca_file_holds_a_key", {"ca_file": "stray.key"},
     "ca_file: |{stray.key}", ["ca_file", "no certificate"]),
    ("listener_key_does_not_match", {"listen_key": "stray.key"},
     "key: |{stray.key}", ["tls.key", MISMATCH]),
    ("listener_cert_not_pem", {"listen_cert": "garbage.pem"},
     "cert: |{garbage.pem}", ["tls.cert", "cannot load"]),
    ("listener_key_missing", {"listen_key": "/nonexistent/sluice.key"},
     "key: |/nonexistent/sluice.key", ["key", "cannot read"]),
    ("client_key_does_not_match", {"client_key": "other.key"},
     "key: |{other.key}", ["upstreams.sec.tls.key", MISMATCH]),
    ("client_cert_not_pem", {"client_cert": "garbage.pem"},
     "cert: |{garbage.pem}", ["upstreams.sec.tls.cert", "cannot load"]),
]


def check_bad(pki, tmp_path, case, args):
    _, over, needle, words = case
    text = config_text(pki, **over)
    needle = needle.replace("{garbage.pem}", pki.path("garbage.pem")) \
        .replace("{stray.key}", pki.path("stray.key")).replace("{other.key}", pki.path("other.key"))
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line, col = tlsutil.yaml_position(text, needle)
    p = harness.run_cli(args + ["-c", str(path)])
    out = p.stdout + p.stderr
    assert p.returncode == 1, "exit %d, output:\n%s" % (p.returncode, out)
    want = "%s:%d:%d:" % (path, line, col)
    assert want in p.stderr, "expected %r (the value of that key) in:\n%s\nconfig:\n%s" % (
        want, out, text)
    msg = p.stderr[p.stderr.index(want):].splitlines()[0]
    for w in words:
        alts = w if isinstance(w, tuple) else (w,)
        assert any(a in msg for a in alts), "message should mention %r: %r" % (w, msg)


def test_check_good_tls_config(pki, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(config_text(pki))
    p = harness.run_cli(["-t", "-c", str(path)])
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    assert "ok" in p.stdout, p.stdout


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_check_bad_tls_files(pki, tmp_path, case):
    check_bad(pki, tmp_path, case, ["-t"])


@pytest.mark.parametrize("case", [c for c in BAD_FILES if c[0] in
                                  ("ca_file_not_pem", "listener_key_does_not_match",
                                   "client_key_does_not_match")],
                         ids=lambda c: c[0])
def test_bad_tls_files_stop_the_daemon_at_start(pki, tmp_path, case):
    """Without -t the daemon refuses to start, with the same FILE:LINE:COL."""
    check_bad(pki, tmp_path, case, [])
