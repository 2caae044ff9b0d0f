"""Object lifetimes at the edges of a request's life (issue 9): what must stay valid when a
reload, a shutdown or a failed connect happens while something still refers to it.

  - a TLS client context replaced by a reload while connections made from it are still
    open (TLS 1.3 session tickets arrive after the handshake and call back into it)
  - a POST whose body was handed to the upstream without a copy (retries off) and then
    has to be sent again because a reload turned retries on while it was at the upstream
  - a 429 that arrives after drain_timeout has expired (the request would be queued
    again into a server that is shutting down)
  - a connect() that fails at once, inside the call that starts the request

Every test runs the real daemon (the ASan build by default): the fixture fails the test on
any sanitizer report in its stderr, on a daemon that died, or on one that does not exit 0
after SIGTERM. Timings carry tolerances for a noisy 2-core machine under ASan.
"""

import errno
import hashlib
import os
import re
import signal
import socket
import threading
import time

import pytest

import fairutil
import harness
import tlsutil


# --------------------------------------------------------------------------- helpers

OUTCOME = re.compile(r"reloaded |reload failed|reload ignored")


def write_config(s, cfg):
    """Replace s's config file atomically, so a reload never reads half a file."""
    text = harness.to_yaml(cfg) + "\n" if isinstance(cfg, dict) else cfg
    tmp = s.config_path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, s.config_path)


def outcomes(s):
    return [line for line in s.stderr().splitlines() if OUTCOME.search(line)]


def reload(s, cfg=None, timeout=5.0):
    """Write cfg (when given), send SIGHUP and wait until the daemon logs what it did with
    it; returns that log line."""
    if cfg is not None:
        write_config(s, cfg)
    before = len(outcomes(s))
    s.send_signal(signal.SIGHUP)
    lines = harness.wait_until(lambda: s.proc.poll() is not None or outcomes(s)[before:],
                               timeout, interval=0.005, what="the outcome of SIGHUP in the log")
    if s.proc.poll() is not None:
        raise AssertionError("sluice died during a reload:\n%s"
                             % harness.sanitizer_excerpt(s.stderr()))
    return lines[0]


def assert_no_sanitizer(s):
    """Fail now (with the report) rather than at teardown, so the first failure shown is
    the sanitizer's and not a symptom of the daemon having died."""
    s.check_sanitizers()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tlsutil.Pki(tmp_path_factory.mktemp("pki")).build()


# --------------------------------------------------------------------------- 1. TLS reload

# SIGHUP period and the load that goes with it. Each client loop opens a new client
# connection per request and keepalive: 0 makes every request a new TLS connection to the
# upstream (full or resumed handshake, then two TLS 1.3 session tickets from Python's
# ssl server, which sluice reads after the handshake, in the session callback).
HUP_PERIOD = 0.1
TLS_RUN_SECONDS = 3.0
TLS_CLIENTS = 4


def test_tls_reloads_while_tls_connections_open(pki, sluice_factory):
    """HTTPS upstream, keepalive 0, 4 client loops sending requests back to back for 3 s
    while SIGHUP (same file) comes every 100 ms. Each reload builds a new TLS client
    context and drops the old one while connections made from it are still handshaking
    or waiting for their answer; their session tickets then arrive into the context they
    were made from. Required: every request is answered 200 and the daemon has no
    sanitizer report (the old context must live as long as its last connection).

    Before the fix (725678d): ASan heap-use-after-free in client_new_session_cb, which
    reads the freed struct tls_ctx through SSL_CTX_get_app_data."""
    u = tlsutil.TlsUpstream(pki).start()
    try:
        cfg = harness.simple_config(u.url, limits=[{"rate": "10000/s", "burst": 100}],
                                    keepalive=0)
        cfg["upstreams"]["api"]["tls"] = {"ca_file": pki.path("ca.pem")}
        s = sluice_factory(cfg)
        assert harness.http_request(s.port, "GET", "/api/warm").status == 200

        stop = threading.Event()
        results = [[] for _ in range(TLS_CLIENTS)]
        reloads, reload_errors = [], []

        def client(i):
            n = 0
            while not stop.is_set():
                try:
                    r = harness.http_request(s.port, "GET", "/api/c%d/%d" % (i, n), timeout=10)
                    results[i].append((n, r.status, r.header("sluice-reason")))
                except Exception as e:  # a connection error is a failure, reported below
                    results[i].append((n, None, repr(e)))
                    if not s.alive():
                        return
                n += 1

        def reloader():
            next_t = time.monotonic() + HUP_PERIOD
            try:
                while not stop.is_set():
                    delay = next_t - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                    next_t += HUP_PERIOD
                    reloads.append(reload(s))
            except Exception as e:
                reload_errors.append(e)

        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(TLS_CLIENTS)]
        threads.append(threading.Thread(target=reloader, daemon=True))
        for t in threads:
            t.start()
        stop.wait(TLS_RUN_SECONDS)
        stop.set()
        for t in threads:
            t.join(15)
        assert_no_sanitizer(s)
        assert not reload_errors, reload_errors
        assert all("reloaded " in line for line in reloads), \
            [line for line in reloads if "reloaded " not in line][:3]
        assert len(reloads) >= TLS_RUN_SECONDS / HUP_PERIOD / 2, \
            "only %d reloads in %.0f s" % (len(reloads), TLS_RUN_SECONDS)
        flat = [x for rs in results for x in rs]
        bad = [x for x in flat if x[1] != 200]
        assert not bad, "%d of %d requests not 200, first: %r" % (len(bad), len(flat), bad[:5])
        # The pressure was real: many new TLS connections, many of them during reloads.
        assert len(flat) >= 100, "only %d requests in %.0f s" % (len(flat), TLS_RUN_SECONDS)
        assert u.connections >= len(flat), (u.connections, len(flat))
        assert s.alive()
    finally:
        u.stop()
