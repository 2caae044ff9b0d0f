"""Small helpers for bench/run.sh (stdlib only).

  util.py ports N              print N distinct free TCP ports on 127.0.0.1
  util.py wait-port PORT SECS  exit 0 once 127.0.0.1:PORT accepts, 1 after SECS
  util.py cpu PID...           print the CPU seconds (user+sys, all threads) of the PIDs
  util.py rss PID              print VmRSS of PID in KiB
  util.py busy SECS            print how busy all CPUs were over SECS, in percent
  util.py accepts PORT         print nginx stub_status "accepts" at 127.0.0.1:PORT/stub
  util.py sysbusy              print the CPU seconds all CPUs spent so far in user+nice+system
                               mode, then those stolen by the hypervisor (/proc/stat)
  util.py cpurun FILE CMD...   run CMD, write its CPU seconds (user+sys) to FILE, exit as it did
  util.py quiet SECS PCT       wait up to SECS for a second in which the CPUs are < PCT% busy;
                               print the last busy figure

Imported by the open-loop clients (rate_client.py, shared_client.py): open_loop() and
write_offered().
"""
import asyncio
import os
import resource
import socket
import sys
import time


def ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


def wait_port(port, secs):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return 0
        except OSError:
            time.sleep(0.05)
    return 1


def cpu(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    print("%.2f" % (total / tick))


def rss(pid):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                print(line.split()[1])
                return 0
    return 1


def busy(secs):
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return sum(v), idle

    t0, i0 = sample()
    time.sleep(secs)
    t1, i1 = sample()
    print("%.0f" % (100.0 * (1 - (i1 - i0) / max(t1 - t0, 1))))


def accepts(port):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/stub" % port, timeout=5) as r:
        lines = r.read().decode().splitlines()
    # "Active connections: N" / "server accepts handled requests" / " A H R" / ...
    print(lines[2].split()[0])


def sysbusy():
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    steal = v[7] if len(v) > 7 else 0
    print("%.2f %.2f" % ((v[0] + v[1] + v[2]) / tick, steal / tick))


def cpurun(out, cmd):
    import resource
    import signal
    import subprocess
    child = subprocess.Popen(cmd)

    def forward(signum, frame):  # stopping this wrapper stops the command
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as f:
        f.write("%.2f\n" % (ru.ru_utime + ru.ru_stime))
    return rc


def quiet(secs, pct):
    import io
    import contextlib
    deadline = time.monotonic() + secs
    while True:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            busy(1.0)
        b = buf.getvalue().strip()
        if float(b) < pct or time.monotonic() >= deadline:
            print(b)
            return 0


async def open_loop(rate, duration, grace, start):
    """Open loop: start(i) (a coroutine: one request) at t0 + i / rate for i below rate *
    duration, never waiting for answers; then `grace` seconds more, and cancel what is still
    pending. Returns (requests started, seconds the starting took, how late the latest start
    was behind its schedule)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tasks = []
    n = int(rate * duration)
    t0 = time.monotonic()
    late = 0.0
    for i in range(n):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            late = max(late, now - due)
        tasks.append(asyncio.ensure_future(start(i)))
    offered_s = time.monotonic() - t0
    await asyncio.sleep(grace)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return n, offered_s, late


def write_offered(f, n, offered_s, late, counts):
    """The offered load and the answers by status, as KEY=VALUE lines."""
    f.write("offered=%d\noffered_s=%.3f\noffered_rate=%.1f\nmax_late_ms=%.1f\n"
            % (n, offered_s, n / offered_s if offered_s > 0 else 0, late * 1000))
    for k, v in sorted(counts.items()):
        f.write("status_%s=%d\n" % (k, v))


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "ports":
        ports(int(argv[2]))
    elif cmd == "wait-port":
        return wait_port(int(argv[2]), float(argv[3]))
    elif cmd == "cpu":
        cpu(argv[2:])
    elif cmd == "rss":
        return rss(argv[2])
    elif cmd == "busy":
        busy(float(argv[2]))
    elif cmd == "accepts":
        accepts(int(argv[2]))
    elif cmd == "sysbusy":
        sysbusy()
    elif cmd == "cpurun":
        return cpurun(argv[2], argv[3:])
    elif cmd == "quiet":
        return quiet(float(argv[2]), float(argv[3]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
