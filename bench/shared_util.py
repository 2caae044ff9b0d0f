"""Helpers for bench/shared.sh (stdlib only).

  shared_util.py ping PORT SECS        exit 0 once redis on 127.0.0.1:PORT answers PING
  shared_util.py lease-calls PORT      print the calls of the lease commands so far (EVALSHA,
                                       and EVAL / FCALL should they be used), INFO commandstats
  shared_util.py redis-version PORT    print redis_version
  shared_util.py metrics PORT...       sum the sluice_shared_* series of the admin listeners
                                       at 127.0.0.1:PORT/metrics over the instances; print
                                       key=value: slots_granted, slots_released,
                                       slots_dropped, calls_ok, calls_empty, calls_error,
                                       calls_timeout, calls_noscript, fences, fleet_pauses,
                                       lateness_mean_ms, in_fallback (instances in fallback),
                                       released_by_instance (slots released, a / b / c)
"""
import re
import socket
import sys
import time
import urllib.request

LEASE_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


def redis_call(port, *args, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        req = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
        s.sendall(req)
        buf = b""
        while b"\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            buf += d
        head, _, rest = buf.partition(b"\r\n")
        if head[:1] in (b"+", b"-", b":"):
            return head[1:].decode()
        n = int(head[1:])
        while len(rest) < n + 2:
            d = s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            rest += d
        return rest[:n].decode("utf-8", "replace")


def info(port, section):
    out = {}
    for line in redis_call(port, "INFO", section).splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k] = v
    return out


def lease_calls(port):
    total = 0
    for k, v in info(port, "commandstats").items():
        if k.startswith("cmdstat_") and k[8:] in LEASE_COMMANDS:
            m = re.search(r"(?:^|,)calls=(\d+)", v)
            total += int(m.group(1)) if m else 0
    return total


SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def metrics(ports):
    acc = {}
    lat_sum = lat_n = 0.0
    fallback = 0
    per_instance = []
    for p in ports:
        mine = 0
        try:
            text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % p, timeout=5).read()
        except OSError:
            continue
        for line in text.decode().splitlines():
            m = SAMPLE.match(line)
            if not m or not m.group(1).startswith("sluice_shared_"):
                continue
            name, labels, v = m.group(1), m.group(2) or "", float(m.group(3))
            lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if name == "sluice_shared_slots_total":
                key = "slots_" + lab.get("outcome", "?")
                if key == "slots_released":
                    mine += v
            elif name == "sluice_shared_lease_calls_total":
                key = "calls_" + lab.get("result", "?")
            elif name == "sluice_shared_fences_total":
                key = "fences"
            elif name == "sluice_shared_fleet_pauses_total":
                key = "fleet_pauses"
            elif name == "sluice_shared_release_lateness_seconds_sum":
                lat_sum += v
                continue
            elif name == "sluice_shared_release_lateness_seconds_count":
                lat_n += v
                continue
            elif name == "sluice_shared_mode":
                if lab.get("mode") == "fallback" and v == 1:
                    fallback += 1
                continue
            else:
                continue
            acc[key] = acc.get(key, 0) + v
        per_instance.append("%d" % mine)
    for k in ("slots_granted", "slots_released", "slots_dropped", "calls_ok", "calls_empty",
              "calls_error", "calls_timeout", "calls_noscript", "fences", "fleet_pauses"):
        print("%s=%d" % (k, acc.get(k, 0)))
    print("lateness_mean_ms=%.3f" % (1000 * lat_sum / lat_n if lat_n else 0))
    print("in_fallback=%d" % fallback)
    print("released_by_instance=%s" % " / ".join(per_instance))
    print("metrics_found=%d" % (1 if acc or lat_n else 0))


def main():
    cmd = sys.argv[1]
    if cmd == "ping":
        port, secs = int(sys.argv[2]), float(sys.argv[3])
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            try:
                if redis_call(port, "PING", timeout=0.5) == "PONG":
                    return 0
            except OSError:
                pass
            time.sleep(0.02)
        return 1
    if cmd == "lease-calls":
        print(lease_calls(int(sys.argv[2])))
        return 0
    if cmd == "redis-version":
        print(info(int(sys.argv[2]), "server").get("redis_version", "?"))
        return 0
    if cmd == "metrics":
        metrics(sys.argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
