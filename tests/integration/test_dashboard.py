"""The dashboard (issue 12): GET / on the admin listener, rendered by a real browser.

Debian's chromium runs headless, driven through the DevTools protocol over a pipe
(contrib/dashboard/cdp.py, standard library only), against a live sluice with requests
queued, refused and paused. The tests read what the page shows: every number sits in an
element with data-field="NAME" (its text formatted, its data-value raw) inside the
upstream's card, <section data-upstream="NAME">. Every page must also run clean: no
console error, no exception, no Content-Security-Policy violation, no dialog.

Without chromium these tests fail (they do not skip): `make test` installs it
(contrib/install-deps.sh), or `apt-get install chromium`; $CHROMIUM names another binary.
"""

import html.parser
import json
import os
import re
import subprocess
import time

import pytest

import fairutil
import harness

import sys
sys.path.insert(0, os.path.join(harness.REPO, "contrib", "dashboard"))
import cdp  # noqa: E402

DASH = os.path.join(harness.REPO, "contrib", "dashboard")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ASSETS = [("/", "index.html", "text/html; charset=utf-8"),
          ("/app.js", "app.js", "text/javascript; charset=utf-8"),
          ("/app.css", "app.css", "text/css; charset=utf-8"),
          ("/favicon.svg", "favicon.svg", "image/svg+xml; charset=utf-8")]
EVIL_KEY = "<img src=x onerror=alert(1)>"
EVIL_KEY2 = "\"'><svg onload=alert(2)>&amp;"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    log = str(tmp_path_factory.mktemp("chromium") / "chromium.log")
    try:
        b = cdp.Browser(log_path=log).start()
    except cdp.ChromiumMissing as e:
        pytest.fail("the dashboard tests need a real browser: %s" % e, pytrace=False)
    except cdp.CDPError as e:
        pytest.fail("chromium did not start (%s); its log: %s" % (e, log), pytrace=False)
    yield b
    b.close()


@pytest.fixture
def open_page(browser):
    """open_page(admin_port, width=1280, height=900, mobile=False) -> Dash, loaded."""
    pages = []

    def open_(admin_port, **kw):
        p = browser.new_page(**kw)
        pages.append(p)
        p.goto("http://127.0.0.1:%d/" % admin_port)
        d = Dash(p)
        d.wait_live()
        return d

    yield open_
    for p in pages:
        p.close()


class Dash:
    """What the dashboard shows, read from its DOM."""

    def __init__(self, page):
        self.page = page

    def wait_live(self, timeout=10):
        self.page.wait("document.getElementById('conn').dataset.state === 'live'", timeout,
                       "the page to show live data")

    def upstreams(self):
        return self.page.eval("Array.from(document.querySelectorAll('#upstreams > "
                              "[data-upstream]'), function (c) { return c.dataset.upstream; })")

    def field(self, upstream, name):
        """{text, value, hidden} of data-field=name in the card of `upstream`, or None."""
        return self.page.eval("""(function (up, name) {
            var cards = document.querySelectorAll('#upstreams > [data-upstream]');
            for (var i = 0; i < cards.length; i++) {
                if (cards[i].dataset.upstream !== up) continue;
                var e = cards[i].querySelector('[data-field="' + name + '"]');
                if (!e) return null;
                var hidden = false;
                for (var x = e; x && x !== cards[i]; x = x.parentElement)
                    hidden = hidden || x.hidden;
                return {text: e.textContent, value: e.dataset.value === undefined ? null :
                        e.dataset.value, hidden: hidden};
            }
            return null;
        })(%s, %s)""" % (json.dumps(upstream), json.dumps(name)))

    def value(self, upstream, name):
        f = self.field(upstream, name)
        assert f is not None, "no data-field=%s in the card of %s" % (name, upstream)
        return float(f["value"]) if f["value"] not in (None, "") else None

    def wait_value(self, upstream, name, pred, timeout=10, what=None):
        deadline = time.monotonic() + timeout
        while True:
            v = self.value(upstream, name)
            if v is not None and pred(v):
                return v
            if time.monotonic() >= deadline:
                raise AssertionError("the page's %s of %s is %r after %.0fs (waited for %s)"
                                     % (name, upstream, v, timeout, what or "a condition"))
            time.sleep(0.1)

    def top(self, field):
        return self.page.eval("(function (f) { var e = document.querySelector("
                              "'#top [data-field=\"' + f + '\"]'); return e ? "
                              "{text: e.textContent, value: e.dataset.value} : null; })(%s)"
                              % json.dumps(field))

    def assert_clean(self):
        assert self.page.problems() == [], "the page reported problems"
        assert self.page.dialogs() == [], "the page opened a dialog"


def admin_config(upstream_url, admin_port, **kw):
    cfg = harness.simple_config(upstream_url, **kw)
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    return cfg


def add_upstream(cfg, name, url, prefix, rate="10/s"):
    cfg["upstreams"][name] = {"url": url, "limits": [{"rate": rate, "burst": 1}]}
    cfg["routes"].append({"path_prefix": prefix, "strip_prefix": True, "upstream": name})


def start(sluice_factory, cfg):
    s = sluice_factory(cfg)
    ap = int(cfg["admin"]["address"].rsplit(":", 1)[1])
    harness.wait_until(lambda: harness.port_accepts(ap), 5.0, what="admin listener")
    return s, ap


# --------------------------------------------------------------------------- the assets

def test_compiled_assets_are_generated_from_the_sources(tmp_path):
    """proxy/dashboard_assets.c is what contrib/dashboard/embed.sh makes of the sources
    now (a source edited without running make would ship the old page), and the page
    stays small."""
    out = tmp_path / "assets.c"
    subprocess.run(["sh", os.path.join(DASH, "embed.sh"), str(out)], check=True, timeout=30)
    with open(os.path.join(harness.REPO, "proxy", "dashboard_assets.c"), "rb") as f:
        checked_in = f.read()
    assert out.read_bytes() == checked_in, \
        "proxy/dashboard_assets.c is stale: run make (it regenerates it) and commit it"
    total = sum(os.path.getsize(os.path.join(DASH, f)) for _, f, _ in ASSETS)
    assert total < 64 * 1024, "the dashboard is %d bytes: keep it to a few tens of KB" % total


class _Markup(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self.scripts = []
        self.links = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k, _ in attrs:
            if k == "style" or k.startswith("on"):
                self.problems.append("<%s %s=...>" % (tag, k))
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            if "src" not in a:
                self.problems.append("inline <script>")
            self.scripts.append(a.get("src"))
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])

    def handle_data(self, data):
        pass


def test_page_sources_stay_inside_the_policy():
    """Nothing the CSP would block, nothing from elsewhere: no inline script, style or
    event handler in the markup, every link relative to the admin listener, no fonts or
    imports in the CSS, and no HTML parsing of strings in the script (innerHTML and
    friends, eval, Function, string timers, style attributes from strings)."""
    m = _Markup()
    with open(os.path.join(DASH, "index.html"), encoding="ascii") as f:
        m.feed(f.read())
    assert m.problems == []
    assert m.scripts == ["app.js"]
    for link in m.links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//", link, re.I), "external link %r" % link
    with open(os.path.join(DASH, "app.css"), encoding="ascii") as f:
        css = f.read()
    assert not re.search(r"@import|@font-face|url\(", css), "the CSS loads something"
    with open(os.path.join(DASH, "app.js"), encoding="ascii") as f:
        js = re.sub(r"/\*.*?\*/|//[^\n]*", "", f.read(), flags=re.S)  # code, not comments
    for bad in (r"\.innerHTML", r"\.outerHTML", r"insertAdjacentHTML", r"document\.write",
                r"\beval\s*\(", r"\bFunction\s*\(", r"setTimeout\s*\(\s*['\"]",
                r"setInterval\s*\(\s*['\"]", r"setAttribute\s*\(\s*['\"]style",
                r"\.style\.cssText", r"createContextualFragment", r"DOMParser",
                r"https?://(?!www\.w3\.org/2000/svg)"):
        assert not re.search(bad, js), "app.js uses %s" % bad


def test_admin_serves_the_page_with_its_headers(upstream, sluice_factory):
    """/, /app.js, /app.css and /favicon.svg: 200, the bytes of the sources exactly, their
    types, and the admin listener's headers (the CSP the page is written for, no-store,
    nosniff, no-referrer); HEAD gives the headers alone; /status carries them too."""
    s, ap = start(sluice_factory, admin_config(upstream.url, harness.free_port()))
    for path, name, ctype in ASSETS:
        with open(os.path.join(DASH, name), "rb") as f:
            want = f.read()
        r = harness.http_request(ap, "GET", path)
        assert r.status == 200, (path, r)
        assert r.body == want, "%s is not %s byte for byte" % (path, name)
        assert r.header("content-type") == ctype, (path, r.headers)
        assert r.header("content-security-policy") == CSP, (path, r.headers)
        assert r.header("cache-control") == "no-store", (path, r.headers)
        assert r.header("x-content-type-options") == "nosniff", (path, r.headers)
        assert r.header("referrer-policy") == "no-referrer", (path, r.headers)
        assert int(r.header("content-length")) == len(want)
        h = harness.http_request(ap, "HEAD", path)
        assert h.status == 200 and h.body == b"", (path, h)
        assert h.header("content-type") == ctype
    r = harness.http_request(ap, "GET", "/status?history=300")
    assert r.status == 200 and r.header("content-security-policy") == CSP, r
    assert r.header("cache-control") == "no-store"
    assert harness.http_request(ap, "GET", "/index.html").status == 404
    assert harness.http_request(ap, "GET", "/app.js/x").status == 404
    r = harness.http_request(ap, "POST", "/", body=b"x")
    assert r.status == 405, r


# --------------------------------------------------------------------------- the page live

def test_page_shows_each_upstream_queue_and_refusals(upstream, sluice_factory, open_page):
    """Upstream api (1 in flight at most, a queue of 3) and a second one, idle. One slow
    request holds api's only slot, 3 wait behind it, 5 more are refused 503 queue_full.
    The page shows both upstreams, api's queue at 3 of 3 and 1 of 1 in flight, exactly the
    refusals the clients got (total, and a rate above zero), the limit, and sparklines
    that have seen the queue; it runs without a console error or CSP violation."""
    cfg = admin_config(upstream.url, harness.free_port(), rate="1/s", burst=1,
                       max_in_flight=1, queue_size=3, max_wait="30s")
    add_upstream(cfg, "second", upstream.url, "/second/")
    s, ap = start(sluice_factory, cfg)
    slow = harness.RawClient(s.port).send("/api/slow?ms=15000")
    clients = [slow]
    try:
        upstream.wait_for(1)
        clients += [harness.RawClient(s.port).send("/api/q?i=%d" % i).wait_read()
                    for i in range(3)]
        refused = 0
        for i in range(5):
            r = harness.http_request(s.port, "GET", "/api/full?i=%d" % i)
            harness.assert_sluice_error(r, 503, "queue_full")
            refused += 1

        d = open_page(ap)
        assert d.upstreams() == ["api", "second"]
        d.wait_value("api", "queue_depth", lambda v: v == 3, what="3 queued")
        assert d.value("api", "queue_capacity") == 3
        assert d.value("api", "in_flight") == 1 and d.value("api", "max_in_flight") == 1
        assert d.field("api", "queue_depth")["text"] == "3"
        d.wait_value("api", "refusals.queue_full", lambda v: v == refused,
                     what="the %d refusals the clients got" % refused)
        assert d.field("api", "refusals.queue_full")["text"] == str(refused)
        d.wait_value("api", "refusals_rate.queue_full", lambda v: v > 0,
                     what="a refusal rate above zero")
        assert d.value("api", "refusals.deadline") == 0
        assert d.value("second", "queue_depth") == 0
        assert d.value("second", "refusals.queue_full") == 0
        limit = d.field("api", "limit")
        assert limit is not None and "1/s" in limit["text"], limit
        assert d.field("api", "name")["text"] == "api"
        assert d.field("api", "url")["text"] == upstream.url
        # the predicted wait of a request sent now: behind 3 queued at 1/s
        d.wait_value("api", "predicted_wait_ms", lambda v: v >= 1000, what="a wait of >= 1 s")
        # the daemon samples once a second; the sparkline shows the queue it saw
        d.wait_value("api", "spark.queue_depth.max", lambda v: v >= 3, timeout=5,
                     what="the queue in the sparkline")
        d.wait_value("api", "spark.refused.max", lambda v: v >= 1, timeout=5,
                     what="the refusals in the sparkline")
        points = d.page.eval("document.querySelector('[data-upstream=\"api\"] "
                             "[data-field=\"spark.queue_depth\"] polyline')"
                             ".getAttribute('points').split(' ').length")
        assert points >= 1
        top = d.top("client.connections")
        assert top is not None and float(top["value"]) >= 4, top
        d.assert_clean()
    finally:
        harness.close_all(clients)


def test_pause_countdown_after_429(sluice_factory, open_page):
    """The upstream answers the first request 429 Retry-After: 30: sluice pauses api and
    queues the request again. The page shows the pause, its cause and a countdown from
    about 30 s that keeps going down between two polls."""
    up = fairutil.ScriptedUpstream(
        lambda req, i: (429, [("Retry-After", "30")], b"slow down\n") if i == 0 else None)
    up.start()
    try:
        cfg = admin_config(up.url, harness.free_port(), rate="10/s", max_wait="60s")
        s, ap = start(sluice_factory, cfg)
        c = harness.RawClient(s.port).send("/api/first")
        try:
            up.wait_for(1)
            d = open_page(ap)
            d.page.wait("document.querySelector('[data-upstream=\"api\"]').dataset.paused "
                        "=== '1'", 10, "the card to show the pause")
            pause = d.field("api", "pause")
            assert pause is not None and not pause["hidden"], pause
            cause = d.field("api", "pause.cause")["text"]
            assert "429" in cause and "Retry-After" in cause, cause
            assert d.field("api", "pause.scope")["text"] == "scope: upstream"
            left1 = d.value("api", "pause.left_ms")
            assert 20000 <= left1 <= 30000, left1
            text = d.field("api", "pause.left_ms")["text"]
            assert re.fullmatch(r"\d+\.\d s", text), text
            time.sleep(1.5)
            left2 = d.value("api", "pause.left_ms")
            assert 500 <= left1 - left2 <= 4000, (left1, left2)
            # the request went back to the queue, and waits out the pause
            assert d.value("api", "queue_depth") == 1
            d.assert_clean()
        finally:
            c.close()
    finally:
        up.stop()


def test_client_keys_are_shown_as_text(sluice_factory, open_page):
    """Fair-queuing keys come from clients (route key: header:X-Tenant). Keys that are
    markup (an <img> with onerror; a quote that would end an attribute, then <svg onload>)
    are shown as text, in the busiest-keys table and in a per-key pause: no element is
    made from them, no script runs, and the text is exactly the key."""
    seen = set()

    def script(req, i):
        # the first request of each key: 429, which pauses that key (feedback scope: key)
        k = req.header("X-Tenant")
        if k in seen:
            return None
        seen.add(k)
        return 429, [("Retry-After", "30")], b"slow down\n"
    up = fairutil.ScriptedUpstream(script)
    up.start()
    try:
        cfg = fairutil.fair_config(up.url, rate="10/s", max_wait="60s",
                                   fairness={"key_queue_share": 100},
                                   feedback={"scope": "key"},
                                   route={"key": "header:X-Tenant"},
                                   admin_port=harness.free_port())
        s, ap = start(sluice_factory, cfg)
        clients = [harness.RawClient(s.port).send("/api/a", headers=[("X-Tenant", EVIL_KEY)])]
        try:
            up.wait_for(1)
            clients.append(harness.RawClient(s.port).send(
                "/api/b", headers=[("X-Tenant", EVIL_KEY2)]))
            up.wait_for(2)  # both answered 429: both keys paused, their requests queued
            clients += [harness.RawClient(s.port).send(
                "/api/c?i=%d" % i, headers=[("X-Tenant", EVIL_KEY)]).wait_read()
                for i in range(2)]
            d = open_page(ap)
            rows = d.page.wait("""(function () {
                var rows = document.querySelectorAll('[data-upstream="api"] tr[data-key]');
                return rows.length == 2 ? Array.from(rows, function (r) {
                    return [r.dataset.key, r.querySelector('[data-field="key"]').textContent,
                            r.querySelector('[data-field="queued"]').dataset.value]; })
                    : null; })()""", 10, "the two busiest keys")
            assert rows == [[EVIL_KEY, EVIL_KEY, "3"], [EVIL_KEY2, EVIL_KEY2, "1"]], rows
            assert d.page.eval("Array.from(document.querySelectorAll('[data-upstream=\"api\"] "
                               "tr[data-key]'), function (r) { return r.dataset.paused; })") \
                == ["1", "1"], "both keys are paused by the upstream"

            # the last pause was EVIL_KEY2's
            d.page.wait("document.querySelector('[data-upstream=\"api\"]').dataset.paused "
                        "=== '1'", 10, "the card to show the pause")
            assert d.field("api", "pause.key")["value"] == EVIL_KEY2
            assert d.field("api", "pause.key")["text"] == "key: " + EVIL_KEY2
            assert d.field("api", "pause.scope")["text"] == "scope: key"

            assert d.page.eval("document.querySelectorAll('img').length") == 0
            assert d.page.eval("document.querySelectorAll('[onerror], [onload]').length") == 0
            assert d.page.eval("document.querySelectorAll('#upstreams svg').length") == 3
            # the serialized DOM holds the keys escaped, never as markup
            body = d.page.eval("document.body.innerHTML")
            assert "<img" not in body and "<svg onload" not in body
            assert "&lt;img src=x onerror=alert(1)&gt;" in body
            d.assert_clean()
        finally:
            harness.close_all(clients)
    finally:
        up.stop()


def test_disconnected_when_status_fails(upstream, sluice_factory, open_page):
    """The daemon goes away: the page says "disconnected" within a few seconds and keeps
    the last numbers it had, greyed out."""
    cfg = admin_config(upstream.url, harness.free_port())
    s, ap = start(sluice_factory, cfg)
    d = open_page(ap)
    assert d.upstreams() == ["api"]
    assert s.stop() == 0
    d.page.wait("document.getElementById('conn').dataset.state === 'disconnected'", 10,
                "the page to say disconnected")
    assert d.page.eval("document.getElementById('conn').textContent") == "disconnected"
    assert d.page.eval("document.body.classList.contains('stale')") is True
    assert d.upstreams() == ["api"]
    assert d.value("api", "queue_capacity") == 1000


def test_phone_layout(upstream, sluice_factory, open_page):
    """On a phone-sized screen (390 px, mobile) nothing is wider than the screen: one
    column of cards, no sideways scrolling."""
    cfg = fairutil.fair_config(upstream.url, rate="1/s", max_in_flight=1,
                               route={"key": "header:X-Tenant"},
                               admin_port=harness.free_port())
    add_upstream(cfg, "a-rather-long-upstream-name-for-a-phone", upstream.url, "/long/")
    s, ap = start(sluice_factory, cfg)
    slow = harness.RawClient(s.port).send("/api/slow?ms=8000",
                                          headers=[("X-Tenant", "tenant-" + "x" * 80)])
    clients = [slow]
    try:
        upstream.wait_for(1)
        clients += [harness.RawClient(s.port).send(
            "/api/q?i=%d" % i, headers=[("X-Tenant", "tenant-" + "y" * 80)]).wait_read()
            for i in range(2)]
        d = open_page(ap, width=390, height=844, mobile=True)
        d.wait_value("api", "queue_depth", lambda v: v == 2, what="2 queued")
        d.page.wait("document.querySelectorAll('[data-upstream=\"api\"] tr[data-key]')"
                    ".length > 0", 5, "the keys table")
        w = d.page.eval("[document.documentElement.scrollWidth, window.innerWidth]")
        assert w[0] <= w[1], "the page is %d px wide on a %d px screen" % tuple(w)
        over = d.page.eval("""Array.from(document.querySelectorAll('#upstreams *'))
            .filter(function (e) {
                return e.getBoundingClientRect().right > window.innerWidth + 0.5; })
            .map(function (e) { return e.tagName + '.' + e.className; })""")
        assert over == [], over
        d.assert_clean()
    finally:
        harness.close_all(clients)
