"""
TLS helpers for the sluice integration tests: a throw-away PKI made with the `openssl`
command, and an HTTPS version of harness.Upstream.

  Pki(dir).build()    every certificate and key the TLS tests use (see Pki.build)
  TlsUpstream(...)    harness.Upstream (asyncio, every harness behaviour) over TLS with
                      Python's ssl module, optionally asking for a client certificate or
                      capped at TLS 1.2; records per connection the client port, TLS
                      version and client certificate, and every SNI received
  StrictTlsServer     a threaded HTTP/1.1 keep-alive server on blocking ssl sockets. It
                      refuses a handshake the way OpenSSL servers (nginx, ...) do: with a TLS
                      alert. asyncio's SSL transport closes without sending the alert, so
                      where the way a handshake fails matters the tests use both.
  tcp_side_closed()   sluice has closed its end of a connection (read from /proc/net/tcp)
  yaml_position()     1-based LINE:COL of a marked point in a YAML text

Everything here is real: real keys, real X.509 certificates signed by a real (test) CA,
real TLS handshakes on loopback sockets. Nothing is mocked.
"""

import asyncio
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import threading
import time

import harness

OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no

[ dn ]
CN = placeholder

[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ server_localhost ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ server_example ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

# `openssl ca` is used only for the expired certificate: it is the one openssl 3.0
# command that signs with a validity period wholly in the past (-startdate/-enddate).
[ ca ]
default_ca = CA_default

[ CA_default ]
dir = .
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none

[ policy_any ]
commonName = supplied
"""

# A validity period that ended years ago (the CA itself is valid now).
EXPIRED_START = "20200101000000Z"
EXPIRED_END = "20200201000000Z"


def openssl(args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("openssl %s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                                p.stderr.decode(errors="replace")))
    return p


class Pki:
    """A test PKI in directory `d`. After build(), p.path(name) is an absolute path:

      ca.pem / ca.key                  the test CA
      server.pem / server.key          DNS:localhost, IP:127.0.0.1, signed by the CA
      expired.pem / expired.key        same names, signed by the CA, valid only in Jan 2020
      example.pem / example.key        DNS:example.com only, signed by the CA
      other-ca.pem / other-ca.key      an unrelated CA
      other.pem / other.key            DNS:localhost, IP:127.0.0.1, signed by the other CA
      client.pem / client.key          a client certificate (clientAuth) signed by the CA
      stray.key                        a key that belongs to no certificate
      garbage.pem                      text that is not PEM
    """

    def __init__(self, d):
        self.dir = str(d)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _run(self, *args):
        return openssl(args, self.dir)

    def _key(self, name):
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", name + ".key")

    def _ca(self, name, cn):
        self._key(name)
        self._run("req", "-config", "openssl.cnf", "-new", "-x509", "-key", name + ".key",
                  "-subj", "/CN=" + cn, "-days", "30", "-sha256", "-extensions", "v3_ca",
                  "-out", name + ".pem")

    def _csr(self, name, cn):
        self._key(name)
        self._run("req", "-config", "openssl.cnf", "-new", "-key", name + ".key",
                  "-subj", "/CN=" + cn, "-out", name + ".csr")

    def _leaf(self, name, cn, ca, ext, serial):
        self._csr(name, cn)
        self._run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey",
                  ca + ".key", "-set_serial", str(serial), "-days", "30", "-sha256",
                  "-extfile", "openssl.cnf", "-extensions", ext, "-out", name + ".pem")

    def build(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(self.path("openssl.cnf"), "w") as f:
            f.write(OPENSSL_CNF)
        os.makedirs(self.path("newcerts"), exist_ok=True)
        open(self.path("index.txt"), "w").close()
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")

        self._ca("ca", "sluice test CA")
        self._ca("other-ca", "sluice unrelated CA")
        self._leaf("server", "localhost", "ca", "server_localhost", 2)
        self._leaf("example", "example.com", "ca", "server_example", 3)
        self._leaf("other", "localhost", "other-ca", "server_localhost", 4)
        self._leaf("client", "sluice test client", "ca", "client", 5)
        self._csr("expired", "localhost")
        self._run("ca", "-config", "openssl.cnf", "-batch", "-notext", "-cert", "ca.pem",
                  "-keyfile", "ca.key", "-in", "expired.csr", "-out", "expired.pem",
                  "-startdate", EXPIRED_START, "-enddate", EXPIRED_END,
                  "-extensions", "server_localhost")
        self._key("stray")
        with open(self.path("garbage.pem"), "w") as f:
            f.write("this is not a certificate\nnor PEM of any kind\n")
        self._check()
        return self

    def _check(self):
        """The PKI is what the tests assume it is (so a failing test is about sluice)."""
        def verify(cert, ca, *extra):
            return subprocess.run(["openssl", "verify", "-CAfile", ca] + list(extra) + [cert],
                                  cwd=self.dir, capture_output=True, timeout=30)
        for cert, ca in (("server.pem", "ca.pem"), ("example.pem", "ca.pem"),
                         ("other.pem", "other-ca.pem"), ("client.pem", "ca.pem")):
            p = verify(cert, ca)
            assert p.returncode == 0, "%s should verify against %s: %s" % (cert, ca, p.stdout)
        p = verify("expired.pem", "ca.pem")
        assert p.returncode != 0 and b"expired" in p.stdout + p.stderr, p
        p = verify("expired.pem", "ca.pem", "-no_check_time")
        assert p.returncode == 0, "expired.pem should be fine but for its dates: %r" % (p,)
        p = verify("server.pem", "ca.pem", "-verify_ip", "127.0.0.1")
        assert p.returncode == 0, p
        p = verify("example.pem", "ca.pem", "-verify_hostname", "localhost")
        assert p.returncode != 0, p


class TlsUpstream(harness.Upstream):
    """harness.Upstream (same behaviours, same request records, conn_id per TCP
    connection) served over TLS by Python's ssl module.

    cert          Pki base name of the server certificate ("server", "expired", ...)
    client_ca     when set, a client certificate signed by this CA file is REQUIRED
    max_version   e.g. ssl.TLSVersion.TLSv1_2 for an upstream that cannot do TLS 1.3

    tls_conns     {conn_id: {"port", "version", "sni", "client_cert"}} for every
                  connection whose handshake completed and reached the HTTP handler
    sni_seen      every SNI value received (None when the client sent none), in order
    """

    def __init__(self, pki, cert="server", client_ca=None, max_version=None,
                 host="127.0.0.1"):
        super().__init__(host)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.path(cert + ".pem"), pki.path(cert + ".key"))
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        if max_version is not None:
            ctx.maximum_version = max_version
        ctx.sni_callback = self._on_sni
        self.ssl_context = ctx
        self.tls_conns = {}
        self.sni_seen = []
        self._lock = threading.Lock()

    def _on_sni(self, sslobj, name, ctx):
        with self._lock:
            self.sni_seen.append(name)
        return None

    @property
    def url(self):
        return "https://%s:%d" % (self.host, self.port)

    def start(self, timeout=harness.DEFAULT_TIMEOUT):
        # harness.Upstream.start with ssl= added (the rest of the server is inherited).
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._handle, self.host, self._want_port, limit=1 << 20,
                    reuse_address=True, ssl=self.ssl_context, ssl_handshake_timeout=10))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="tls-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise AssertionError("TLS upstream did not start")
        if failure:
            raise failure[0]
        return self

    async def _handle(self, reader, writer):
        # Runs in the loop thread; harness.Upstream._handle numbers the connection
        # (self._ids + 1) before its first await, so the id is known here.
        cid = self._ids + 1
        sslobj = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername")
        cert = sslobj.getpeercert() if sslobj is not None else None
        subject = None
        if cert:
            subject = dict(x[0] for x in cert.get("subject", ()))
        with self._lock:
            self.tls_conns[cid] = {
                "port": peer[1] if peer else None,
                "version": sslobj.version() if sslobj is not None else None,
                "client_cert": subject,
            }
        await super()._handle(reader, writer)

    def connection_ids(self):
        """The distinct connection ids the recorded requests came on, in first-use order."""
        seen = []
        for c in self.conn_ids():
            if c not in seen:
                seen.append(c)
        return seen


class _StrictHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    timeout = harness.DEFAULT_TIMEOUT

    def log_message(self, fmt, *args):
        pass

    def _any(self):
        owner = self.server.owner
        cid = owner.conn_of(self.request)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        req = harness.Request(time.monotonic(), self.command, self.path, self.request_version,
                              list(self.headers.items()), body, cid)
        owner.record(req)
        out = json.dumps({"method": self.command, "target": self.path,
                          "headers": list(self.headers.items()), "body_len": len(body),
                          "conn_id": cid}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any


class _StrictHttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def finish_request(self, request, client_address):
        # In the connection's own thread: the handshake, then HTTP on the TLS socket.
        self.owner.serve_connection(request, client_address)


class StrictTlsServer:
    """An HTTPS origin on blocking sockets: one thread per connection, HTTP/1.1 keep-alive,
    every request answered 200 with a JSON echo (method, target, headers, conn_id).

    s = StrictTlsServer(pki, client_ca=..., max_version=...).start();  s.url
    s.requests          harness.Request list (conn_id: one per TLS connection)
    s.tls_conns         {conn_id: {"port", "version", "client_cert"}} handshakes completed
    s.handshake_errors  why the server refused handshakes (its side), in order
    """

    def __init__(self, pki, cert="server", client_ca=None, max_version=None,
                 host="127.0.0.1"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.path(cert + ".pem"), pki.path(cert + ".key"))
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        if max_version is not None:
            ctx.maximum_version = max_version
        self.ssl_context = ctx
        self.host = host
        self.port = None
        self.tls_conns = {}
        self.handshake_errors = []
        self._reqs = []
        self._socks = {}
        self._ids = 0
        self._cond = threading.Condition()
        self._httpd = None
        self._thread = None

    @property
    def url(self):
        return "https://%s:%d" % (self.host, self.port)

    def start(self):
        self._httpd = _StrictHttpServer((self.host, 0), _StrictHandler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="strict-tls", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._cond:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(5)
        self._httpd = None

    def serve_connection(self, sock, addr):
        sock.settimeout(harness.DEFAULT_TIMEOUT)
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._cond:
                self.handshake_errors.append(str(e))
                self._cond.notify_all()
            sock.close()
            return
        with self._cond:
            self._ids += 1
            cid = self._ids
            self._socks[tls] = cid
            cert = tls.getpeercert()
            self.tls_conns[cid] = {
                "port": addr[1], "version": tls.version(),
                "client_cert": dict(x[0] for x in cert["subject"]) if cert else None}
        try:
            _StrictHandler(tls, addr, self._httpd)
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._socks.pop(tls, None)
            try:
                tls.close()
            except OSError:
                pass

    def conn_of(self, tls):
        with self._cond:
            return self._socks.get(tls)

    def record(self, req):
        with self._cond:
            self._reqs.append(req)
            self._cond.notify_all()

    @property
    def requests(self):
        with self._cond:
            return list(self._reqs)

    @property
    def count(self):
        with self._cond:
            return len(self._reqs)

    def wait_handshake_errors(self, n, timeout=harness.DEFAULT_TIMEOUT):
        return harness.wait_until(lambda: len(self.handshake_errors) >= n and
                                  list(self.handshake_errors), timeout,
                                  what="%d refused handshakes" % n)


def tcp_side_closed(local_port):
    """True when no socket with this local port on 127.0.0.1 is still open on our side
    (ESTABLISHED or CLOSE_WAIT): the process owning it has closed it."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            f = open(name)
        except FileNotFoundError:
            continue
        with f:
            next(f)
            for line in f:
                parts = line.split()
                lport = int(parts[1].split(":")[1], 16)
                if lport == local_port and parts[3] in ("01", "08"):
                    return False
    return True


def yaml_position(text, needle):
    """1-based (line, col) of needle in text, which must occur exactly once; a '|' in
    needle marks the exact point (else its start)."""
    mark = needle.find("|")
    plain = needle.replace("|", "")
    assert text.count(plain) == 1, "needle %r not unique in:\n%s" % (plain, text)
    idx = text.index(plain) + max(mark, 0)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col
