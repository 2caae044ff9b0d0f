#!/usr/bin/env python3
"""A tiny local upstream for `make run`: answers every request with a short JSON echo
(method, path, the headers sluice forwarded, the time it arrived), so that the demo
route works without internet.  Usage: demo_upstream.py PORT

A path ending in /429 is answered 429 Too Many Requests with Retry-After: 30 (or
?retry_after=N), to see sluice pause the upstream (`make screenshot` does)."""
import http.server
import json
import sys
import time
import urllib.parse


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if path.endswith("/429"):
            wait = dict(urllib.parse.parse_qsl(query)).get("retry_after", "30")
            body = b"slow down\n"
            self.send_response(429)
            self.send_header("Retry-After", wait if wait.isdigit() else "30")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = json.dumps({
            "method": self.command,
            "path": self.path,
            "arrived": "%.3f" % time.time(),
            "body_bytes": len(body_in),
            "headers": dict(self.headers),
        }, indent=1).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
