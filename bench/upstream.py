"""A minimal HTTP/1.1 upstream for the rate and memory benches (stdlib only).

Answers every request at once with 200 "ok\\n" (keep-alive) and appends one line per
request to --out: the time its header block arrived, in ns. That time is the kernel's
receive timestamp (SO_TIMESTAMPNS, CLOCK_REALTIME) of the piece that completed the
header, so it records when sluice sent the request even if this process was scheduled
late; where the kernel gives none, the process's own clock reading (time.time_ns()).
Request bodies are not expected (the benches send GETs); SIGTERM/SIGINT stop it.

  upstream.py --port PORT --out FILE
"""
import argparse
import selectors
import signal
import socket
import struct
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESPEC = struct.Struct("@ll")

stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = open(args.out, "w", buffering=1)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, None)
    bufs = {}

    def close(conn):
        sel.unregister(conn)
        bufs.pop(conn, None)
        conn.close()

    while not stopping:
        try:
            events = sel.select(0.2)
        except InterruptedError:
            continue
        for key, _ in events:
            if key.data is None:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                try:
                    conn.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:
                    pass
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                bufs[conn] = b""
                sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            conn = key.fileobj
            try:
                data, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                close(conn)
                continue
            if not data:
                close(conn)
                continue
            ts = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(cdata) >= TIMESPEC.size:
                    sec, nsec = TIMESPEC.unpack_from(cdata)
                    ts = sec * 1000000000 + nsec
            if ts is None:
                ts = time.time_ns()
            buf = bufs[conn] + data
            answers = 0
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                buf = buf[end + 4:]
                out.write("%d\n" % ts)
                answers += 1
            bufs[conn] = buf
            if answers:
                try:
                    conn.sendall(RESPONSE * answers)  # tiny: fits the socket buffer
                except OSError:
                    close(conn)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
