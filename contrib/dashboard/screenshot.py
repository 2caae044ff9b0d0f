#!/usr/bin/env python3
"""`make screenshot`: docs/dashboard.png, the dashboard of a demo under load.

    screenshot.py SLUICE_BIN OUT.png [SECONDS]

Starts contrib/demo_upstream.py and sluice on free loopback ports, with the sample's demo
upstream (2/s, a queue of 100, max_wait 30s) and two more behind the same demo server:
"payments" (10/s, fair queuing by X-Tenant, one tenant much busier than the others) and
"maps" (1/s, answering one request 429 Retry-After: 30, so the page shows a pause
counting down). Load runs in the background for SECONDS (default 75) so the sparklines
have a history, then headless Chromium (contrib/dashboard/cdp.py) renders the admin page
at 1400 px and the whole page is written to OUT.png. Everything it started is stopped.
"""

import asyncio
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import cdp  # noqa: E402

CONFIG = """\
listen:
  - address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
log_level: warn
drain_timeout: 2s
upstreams:
  demo:                       # as in proxy.yaml.sample
    url: http://127.0.0.1:{demo}
    limits:
      - rate: 2/s
        burst: 1
    queue:
      size: 100
      max_wait: 30s
  payments:
    url: http://127.0.0.1:{demo}
    limits:
      - rate: 10/s
        burst: 5
      - rate: 30000/h
    max_in_flight: 16
    queue:
      size: 300
      max_wait: 20s
    fairness:
      key_queue_share: 120
  maps:
    url: http://127.0.0.1:{demo}
    limits:
      - rate: 1/s
        burst: 2
    max_in_flight: 4
    queue:
      size: 50
      max_wait: 60s
routes:
  - path_prefix: /demo/
    strip_prefix: true
    upstream: demo
  - path_prefix: /payments/
    strip_prefix: true
    upstream: payments
    key: header:X-Tenant
  - path_prefix: /maps/
    strip_prefix: true
    upstream: maps
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("screenshot: %s exited with %s" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("screenshot: %s not listening on %d" % (what, port))


async def request(port, path, headers=()):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, asyncio.TimeoutError):
        return
    try:
        head = "GET %s HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n" % path
        head += "".join("%s: %s\r\n" % h for h in headers)
        w.write((head + "\r\n").encode())
        await w.drain()
        await asyncio.wait_for(r.read(), 90)
    except (OSError, asyncio.TimeoutError):
        pass
    finally:
        w.close()


async def load(port, seconds, stop):
    """Open-loop arrivals (each request on its own connection, none waits for another)."""
    t0 = time.monotonic()
    tasks = set()
    n = 0
    paused = False
    tenants = [("tenant-a", 8.0), ("tenant-b", 2.5), ("tenant-c", 1.0), ("batch", 0.8)]
    while not stop.is_set():
        t = time.monotonic() - t0
        n += 1
        # demo: around its 2/s, now above (the queue grows), now below (it drains)
        demo = 2.2 + 1.6 * math.sin(t / 9.0)
        jobs = [("/demo/item/%d" % n, (), demo)]
        jobs += [("/payments/charge/%d" % n, (("X-Tenant", k),), r) for k, r in tenants]
        jobs.append(("/maps/tile/%d" % n, (), 0.9))
        for path, headers, rate in jobs:
            # Poisson arrivals at `rate` per second, drawn per 100 ms step
            k = sum(1 for _ in range(4) if _rand() < rate / 40.0)
            for _ in range(k):
                tasks.add(asyncio.ensure_future(request(port, path, headers)))
        if not paused and t >= seconds - 12:
            # maps says 429 Retry-After: 30: paused, counting down in the picture
            paused = True
            tasks.add(asyncio.ensure_future(request(port, "/maps/429")))
        tasks = {x for x in tasks if not x.done()}
        await asyncio.sleep(0.1)
    for x in tasks:
        x.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


_seed = [12345]


def _rand():
    # a fixed sequence, so two runs look alike
    _seed[0] = (_seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return _seed[0] / 0x80000000


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sluice_bin, out = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 75.0
    try:
        browser = cdp.Browser()  # fails early, before any waiting, without chromium
    except cdp.ChromiumMissing as e:
        raise SystemExit("screenshot: %s" % e)
    work = tempfile.mkdtemp(prefix="sluice-screenshot-")
    procs = []
    stop = threading.Event()
    loader = None
    try:
        demo_port, port, admin = free_port(), free_port(), free_port()
        demo = subprocess.Popen([sys.executable, os.path.join(REPO, "contrib",
                                                              "demo_upstream.py"),
                                 str(demo_port)])
        procs.append(demo)
        wait_port(demo_port, demo, "demo upstream")
        conf = os.path.join(work, "demo.yaml")
        with open(conf, "w") as f:
            f.write(CONFIG.format(port=port, admin=admin, demo=demo_port))
        with open(os.path.join(work, "sluice.log"), "wb") as log:
            s = subprocess.Popen([sluice_bin, "-c", conf], stdout=log, stderr=log)
        procs.append(s)
        wait_port(port, s, "sluice")
        wait_port(admin, s, "sluice's admin listener")

        loader = threading.Thread(target=lambda: asyncio.run(load(port, seconds, stop)),
                                  daemon=True)
        loader.start()
        print("screenshot: %.0f s of load on sluice %d (dashboard http://127.0.0.1:%d/)"
              % (seconds, port, admin), flush=True)
        time.sleep(seconds)

        with browser:
            page = browser.new_page(width=1400, height=500)  # the page sets the height
            page.goto("http://127.0.0.1:%d/" % admin)
            if not page.eval("document.getElementById('conn') !== null"):
                raise SystemExit("screenshot: GET / on the admin listener is not the "
                                 "dashboard: %r" % page.eval("document.body.innerText"))
            page.wait("document.getElementById('conn').dataset.state === 'live'", 10,
                      "live data")
            page.wait("document.querySelectorAll('[data-upstream]').length === 3", 10,
                      "three upstreams")
            time.sleep(2.5)  # a couple of polls: bars and sparklines settled
            problems = page.problems()
            if problems:
                raise SystemExit("screenshot: the page reported problems: %s" % problems)
            page.screenshot(out)
        print("screenshot: wrote %s" % out)
    finally:
        stop.set()
        if loader is not None:
            loader.join(30)
        browser.close()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
