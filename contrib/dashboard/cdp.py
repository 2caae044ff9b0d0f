"""
Headless Chromium driven through the DevTools protocol, standard library only.

Used by `make screenshot` (contrib/dashboard/screenshot.py) and the browser tests
(tests/integration/test_dashboard.py). No websocket: Chromium is started with
--remote-debugging-pipe, which speaks the protocol as NUL-terminated JSON messages on
its file descriptors 3 (commands in) and 4 (answers and events out).

    with Browser() as b:                       # raises ChromiumMissing when not installed
        page = b.new_page(width=1280, height=900)
        page.goto("http://127.0.0.1:9901/")
        page.wait("document.querySelector('[data-upstream]') !== null", 5, "a card")
        page.eval("document.title")
        page.problems()                        # console errors, exceptions, CSP reports
        page.screenshot("out.png")

Every wait carries a timeout; the browser is killed if it does not close when asked.
Chromium runs with a new empty profile and no background networking (this machine
refuses outside connections, and a test must not depend on them).
"""

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--hide-scrollbars", "--remote-debugging-pipe",
]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


class ChromiumMissing(RuntimeError):
    pass


class CDPError(RuntimeError):
    pass


def find_chromium():
    """The browser binary: $CHROMIUM, else the first of CANDIDATES on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        if shutil.which(env):
            return shutil.which(env)
        raise ChromiumMissing("CHROMIUM=%s is not an executable" % env)
    for c in CANDIDATES:
        p = shutil.which(c)
        if p:
            return p
    raise ChromiumMissing("no chromium on PATH: install it (Debian: apt-get install chromium; "
                          "`make deps` does) or set CHROMIUM=/path/to/chrome")


def _high_fd(fd):
    """fd moved to a number >= 10 (so putting the pipes on 3 and 4 cannot clobber them)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


# The child: put the pipe ends on 3 and 4, close the originals, become Chromium.
_EXEC_HELPER = ("import os, sys\n"
                "r, w = int(sys.argv[1]), int(sys.argv[2])\n"
                "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w)\n"
                "os.execv(sys.argv[3], sys.argv[3:])\n")


class Browser:
    """One headless Chromium process with a fresh profile (removed on close)."""

    def __init__(self, binary=None, extra_args=(), log_path=None):
        self.binary = binary or find_chromium()
        self.extra_args = list(extra_args)
        self.log_path = log_path
        self.proc = None
        self._profile = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._results = {}
        self._events = []          # (session_id, method, params)
        self._closed = False
        self._wfd = None
        self._rfd = None
        self._log = None

    # ----- process

    def start(self, timeout=20.0):
        self._profile = tempfile.mkdtemp(prefix="sluice-chromium-")
        cmd_r, cmd_w = os.pipe()      # we write commands, Chromium reads them on fd 3
        out_r, out_w = os.pipe()      # Chromium writes on fd 4, we read
        cmd_r, out_w = _high_fd(cmd_r), _high_fd(out_w)
        args = [self.binary] + FLAGS + ["--user-data-dir=" + self._profile] + \
            self.extra_args + ["about:blank"]
        if self.log_path:
            self._log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_HELPER, str(cmd_r), str(out_w)] + args,
                pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL,
                stdout=self._log or subprocess.DEVNULL, stderr=self._log or subprocess.DEVNULL,
                start_new_session=True)
        finally:
            os.close(cmd_r)
            os.close(out_w)
        self._wfd, self._rfd = cmd_w, out_r
        threading.Thread(target=self._reader, name="cdp-reader", daemon=True).start()
        # the first answer says the pipe works
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.version = self.call("Browser.getVersion", timeout=5)
                return self
            except CDPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.2)

    def close(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._send("Browser.close", {}, None)
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, 9)
                except OSError:
                    pass
                self.proc.wait(5)
        for fd in (self._wfd, self._rfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wfd = self._rfd = None
        if self._log:
            self._log.close()
            self._log = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *a):
        self.close()

    # ----- protocol

    def _reader(self):
        buf = b""
        while True:
            try:
                data = os.read(self._rfd, 1 << 16)
            except (OSError, TypeError):
                data = b""
            if not data:
                break
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                self._dispatch(msg)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _dispatch(self, msg):
        if "id" in msg:
            with self._cond:
                self._results[msg["id"]] = msg
                self._cond.notify_all()
            return
        sid = msg.get("sessionId")
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Page.javascriptDialogOpening":
            # an alert() blocks the page: dismiss it (and remember it happened)
            try:
                self._send("Page.handleJavaScriptDialog", {"accept": False}, sid)
            except OSError:
                pass
        with self._cond:
            self._events.append((sid, method, params))
            self._cond.notify_all()

    def _send(self, method, params, session):
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._wfd, data)
            data = data[n:]
        return mid

    def call(self, method, params=None, session=None, timeout=10.0):
        """Send one command and wait for its answer: the result dict, or CDPError."""
        try:
            mid = self._send(method, params, session)
        except (OSError, TypeError) as e:
            raise CDPError("%s: browser pipe closed (%s)" % (method, e))
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._results:
                left = deadline - time.monotonic()
                if self._closed:
                    raise CDPError("%s: the browser went away" % method)
                if left <= 0:
                    raise CDPError("%s: no answer within %.0fs" % (method, timeout))
                self._cond.wait(left)
            msg = self._results.pop(mid)
        if "error" in msg:
            raise CDPError("%s: %s" % (method, msg["error"].get("message", msg["error"])))
        return msg.get("result", {})

    def events(self, session=None, method=None):
        with self._cond:
            return [(m, p) for s, m, p in self._events
                    if (session is None or s == session) and (method is None or m == method)]

    def wait_event(self, session, method, timeout=10.0, since=0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [p for s, m, p in self._events[since:] if s == session and m == method]
                if got:
                    return got[0]
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError("no %s within %.0fs" % (method, timeout))
                self._cond.wait(left)

    def event_count(self):
        with self._cond:
            return len(self._events)

    # ----- pages

    def new_page(self, width=1280, height=900, mobile=False, scale=1):
        t = self.call("Target.createTarget", {"url": "about:blank"})
        s = self.call("Target.attachToTarget", {"targetId": t["targetId"], "flatten": True})
        page = Page(self, t["targetId"], s["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            self.call(domain + ".enable", session=page.session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": scale,
                   "mobile": bool(mobile)}, session=page.session)
        return page


class Page:
    """One tab, attached in flat mode (its commands carry its session id)."""

    def __init__(self, browser, target_id, session):
        self.browser = browser
        self.target_id = target_id
        self.session = session

    def call(self, method, params=None, timeout=10.0):
        return self.browser.call(method, params, self.session, timeout)

    def goto(self, url, timeout=15.0):
        since = self.browser.event_count()
        r = self.call("Page.navigate", {"url": url}, timeout)
        if r.get("errorText"):
            raise CDPError("navigate %s: %s" % (url, r["errorText"]))
        self.browser.wait_event(self.session, "Page.loadEventFired", timeout, since)
        return self

    def eval(self, expression, timeout=10.0):
        """The value of a JavaScript expression (JSON-able), or CDPError on an exception."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError("evaluate: %s" % (d.get("exception", {}).get("description")
                                             or d.get("text")))
        return r.get("result", {}).get("value")

    def wait(self, expression, timeout, what, interval=0.1):
        """Evaluate until the value is truthy; returns it, AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.eval(expression)
            if last:
                return last
            if time.monotonic() >= deadline:
                raise AssertionError("page: timed out after %.0fs waiting for %s (last value %r)"
                                     % (timeout, what, last))
            time.sleep(interval)

    def problems(self):
        """What went wrong in the page, as text lines: console errors and warnings,
        uncaught exceptions, log entries at error level (CSP violations among them)."""
        out = []
        for m, p in self.browser.events(self.session):
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: %s" % (d.get("exception", {}).get("description")
                                              or d.get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning",
                                                                       "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(
                    str(a.get("value", a.get("description"))) for a in p.get("args", []))))
            elif m == "Log.entryAdded" and p["entry"].get("level") in ("error", "warning"):
                e = p["entry"]
                out.append("log %s/%s: %s %s" % (e.get("source"), e.get("level"),
                                                 e.get("text"), e.get("url", "")))
        return out

    def dialogs(self):
        """The alert/confirm/prompt dialogs the page opened (each dismissed at once)."""
        return [p for m, p in self.browser.events(self.session, "Page.javascriptDialogOpening")]

    def screenshot(self, path, full_page=True):
        params = {"format": "png"}
        if full_page:
            m = self.call("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            vp = m.get("cssLayoutViewport") or m["layoutViewport"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": vp["clientWidth"],
                "height": max(size["height"], vp["clientHeight"]), "scale": 1})
        data = self.call("Page.captureScreenshot", params, timeout=30)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target_id})
        except CDPError:
            pass
