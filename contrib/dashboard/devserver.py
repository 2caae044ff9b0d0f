#!/usr/bin/env python3
"""Work on the dashboard without rebuilding sluice.

    devserver.py [--port 9902] [--admin 127.0.0.1:9901 | --fake]

Serves index.html, app.js, app.css and favicon.svg from this directory as they are on disk (edit,
reload the browser) with the admin listener's headers (the same Content-Security-Policy,
Cache-Control: no-store, nosniff, no-referrer), and /status and /metrics either
  --admin HOST:PORT   from a running sluice's admin listener (proxied), or
  --fake              (the default) from a made-up daemon: three upstreams whose queue
                      fills and drains, a 429 pause counting down, fair-queuing keys
                      (one of them markup, to see it shown as text), a shared budget
                      that drops to fallback now and then. The document has the shape
                      proxy/status.c writes.
GET /_fake/down?s=N makes /status fail for N seconds (to see "disconnected").
Standard library only. Listens on 127.0.0.1.
"""

import argparse
import http.client
import http.server
import json
import math
import os
import random
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml; charset=utf-8"),
}
HISTORY_MAX = 300


class FakeDaemon:
    """A made-up sluice, advanced once a second: enough moving parts to see every panel."""

    def __init__(self, seed=12):
        self.rng = random.Random(seed)
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.ups = [
            {"name": "github", "url": "https://api.github.com", "tls": True,
             "limits": [(10.0, 5.0, None), (5000 / 3600, 1.0, None)], "cap": 1000,
             "mif": 64, "max_wait_ms": 30000, "keys": False, "shared": "github-token"},
            {"name": "maps", "url": "http://10.0.0.7:8080", "tls": False,
             "limits": [(2.0, 1.0, None)], "cap": 100, "mif": 8, "max_wait_ms": 20000,
             "keys": True, "shared": None},
            {"name": "llm", "url": "https://llm.example.com/v1", "tls": True,
             "limits": [(0.5, 2.0, None)], "cap": 50, "mif": 4, "max_wait_ms": 60000,
             "keys": False, "shared": None},
        ]
        for u in self.ups:
            u.update(depth=0, hist_depth=[], hist_rel=[], hist_ref=[], totals={
                "queue_full": 0, "deadline": 0, "key_queue_full": 0, "shutdown": 0},
                pause_until=0.0, calls={"ok": 0, "empty": 0, "error": 0, "timeout": 0,
                                        "noscript": 0}, mode="redis")
        # five minutes of history at once, as the daemon keeps it
        for _ in range(HISTORY_MAX):
            self._step()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            time.sleep(1)
            with self.lock:
                self._step()

    def _step(self):
        now = time.time()
        phase = (now - self.t0) / 60.0
        for i, u in enumerate(self.ups):
            rate = u["limits"][0][0]
            arrive = max(0.0, rate * (1.0 + 0.9 * math.sin(phase * 2 + i * 2.1))
                         + self.rng.uniform(-1, 1) * rate * 0.3)
            paused = u["pause_until"] > now
            released = 0 if paused else min(rate, u["depth"] + arrive)
            u["depth"] = u["depth"] + arrive - released
            refused = 0.0
            if u["depth"] > u["cap"] * 0.9:
                refused = u["depth"] - u["cap"] * 0.9
                u["depth"] -= refused
                u["totals"]["queue_full"] += int(refused)
            wait_now = u["depth"] / rate * 1000
            if wait_now > u["max_wait_ms"]:
                extra = int((wait_now - u["max_wait_ms"]) / 1000 * rate)
                u["depth"] -= extra
                refused += extra
                u["totals"]["deadline"] += extra
            u["hist_depth"].append(int(u["depth"]))
            u["hist_rel"].append(int(round(released)))
            u["hist_ref"].append(int(round(refused)))
            for k in ("hist_depth", "hist_rel", "hist_ref"):
                del u[k][:-HISTORY_MAX]
            if u["name"] == "llm" and not paused and self.rng.random() < 0.03:
                u["pause_until"] = now + 20
            if u["shared"]:
                u["calls"]["ok"] += 3
                if self.rng.random() < 0.02:
                    u["mode"] = "fallback" if u["mode"] == "redis" else "redis"
                if u["mode"] == "fallback":
                    u["calls"]["error"] += 1

    def status(self, history):
        with self.lock:
            if time.time() < self.down_until:
                return None
            now = time.time()
            out = {"state": "running", "version": "0.1.0-fake",
                   "uptime_s": int(now - self.t0) + HISTORY_MAX,
                   "now_unix_ms": int(now * 1000),
                   "client": {"connections": sum(int(u["depth"]) for u in self.ups) + 7,
                              "max_connections": 1024,
                              "refused": {"connection_limit": 0, "header_timeout": 3},
                              "refused_rate": {"connection_limit": 0.0,
                                               "header_timeout": 0.0}},
                   "upstreams": [self._upstream(u, now, history) for u in self.ups]}
            return out

    def _upstream(self, u, now, history):
        rate = u["limits"][0][0]
        depth = int(u["depth"])
        rel10 = u["hist_rel"][-10:]
        ref10 = u["hist_ref"][-10:]
        limits = []
        for j, (r, b, _) in enumerate(u["limits"]):
            label = "%g/s" % r if r >= 1 else ("%g/m" % (r * 60) if r * 60 >= 1
                                                else "%g/h" % round(r * 3600))
            shared = None
            if u["shared"] and j == 1:
                shared = {"budget": u["shared"], "mode": u["mode"], "instances": 3,
                          "slots_held": 4 if u["mode"] == "redis" else 0, "granted": 9120,
                          "released": 9100, "dropped": 2, "fleet_pauses": 1, "fences": 0,
                          "calls": dict(u["calls"])}
            limits.append({"label": label, "rate_per_sec": r, "burst": b,
                           "tokens": 0.0 if depth else b, "shared": shared})
        pause = None
        if u["pause_until"] > now:
            pause = {"cause": "429 Retry-After", "scope": "upstream", "key": None,
                     "left_ms": int((u["pause_until"] - now) * 1000)}
        keys = {"tracked": 0, "active": 0, "top": []}
        if u["keys"] and depth:
            names = ["tenant-a", "tenant-b", "<img src=x onerror=alert(1)>", "batch-nightly"]
            weights = [0.55, 0.25, 0.12, 0.08]
            top = [{"key": n, "queued": int(depth * w), "share": w, "paused": False}
                   for n, w in zip(names, weights) if int(depth * w) > 0]
            keys = {"tracked": 5, "active": len(top), "top": top}
        wait = depth / rate * 1000
        doc = {
            "name": u["name"], "url": u["url"], "tls": u["tls"], "limits": limits,
            "release_rate": sum(rel10) / max(1, len(rel10)),
            "queue_depth": depth, "queue_capacity": u["cap"],
            "in_flight": min(u["mif"], int(rate)), "max_in_flight": u["mif"],
            "max_wait_ms": u["max_wait_ms"],
            "next_release_in_ms": int(1000 / rate) if depth else None,
            "predicted_wait_ms": int(wait),
            "queue_wait_ms": {"p50": int(wait / 2), "p99": int(wait * 0.95), "window_s": 60,
                              "count": int(sum(u["hist_rel"][-60:]))},
            "answers_rate": {"2xx": sum(rel10) / 10.0 * 0.97, "3xx": 0.0, "4xx": 0.0,
                             "5xx": sum(rel10) / 10.0 * 0.03},
            "refusals_rate": {"queue_full": sum(ref10) / 10.0, "deadline": 0.0,
                              "shutdown": 0.0, "key_queue_full": 0.0},
            "refusals": dict(u["totals"]),
            "pause": pause,
            "pool": {"idle": 3, "lent": min(u["mif"], int(rate)), "keepalive": u["mif"]},
            "keys": keys,
            "counters": {},
            "shared": [],
        }
        if history:
            n = min(history, HISTORY_MAX)
            doc["history"] = {"interval_s": 1, "queue_depth": u["hist_depth"][-n:],
                              "released": u["hist_rel"][-n:], "refused": u["hist_ref"][-n:]}
        return doc


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None
    admin = None

    def log_message(self, *a):
        pass

    def send(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        if u.path in ASSETS:
            name, ctype = ASSETS[u.path]
            with open(os.path.join(HERE, name), "rb") as f:
                self.send(200, ctype, f.read())
        elif u.path in ("/status", "/metrics", "/healthz") and self.admin:
            self.proxy()
        elif u.path == "/status":
            try:
                hist = max(0, int(q.get("history", "0")))
            except ValueError:
                hist = 0
            doc = self.fake.status(hist)
            if doc is None:
                self.send(503, "text/plain; charset=utf-8", b"fake outage\n")
            else:
                self.send(200, "application/json", json.dumps(doc).encode() + b"\n")
        elif u.path == "/_fake/down" and self.fake:
            self.fake.down_until = time.time() + float(q.get("s", "10"))
            self.send(200, "text/plain; charset=utf-8", b"down\n")
        else:
            self.send(404, "text/plain; charset=utf-8", b"not found\n")

    do_HEAD = do_GET

    def proxy(self):
        host, _, port = self.admin.rpartition(":")
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", self.path)
            r = c.getresponse()
            body = r.read()
            self.send(r.status, r.getheader("Content-Type") or "text/plain", body)
        except OSError as e:
            self.send(502, "text/plain; charset=utf-8", ("admin: %s\n" % e).encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=9902)
    ap.add_argument("--admin", help="HOST:PORT of a sluice admin listener to proxy")
    ap.add_argument("--fake", action="store_true", help="a made-up daemon (the default)")
    a = ap.parse_args()
    if a.admin:
        Handler.admin = a.admin
    else:
        Handler.fake = FakeDaemon()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print("dashboard on http://127.0.0.1:%d/ (%s)" % (
        srv.server_address[1], "proxying " + a.admin if a.admin else "fake daemon"), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
