"""Open-loop load over several sluice instances, with latencies (asyncio, stdlib only),
for bench/shared.sh.

Request i is started at t0 + i / RATE on port PORTS[i % len(PORTS)] (the offered load
split evenly over the instances), whatever happened to the earlier ones: a GET on a new
connection ("Connection: close"). After DURATION seconds it stops offering, waits GRACE
seconds, closes every connection still waiting (sluice withdraws those requests) and
writes key=value lines to --out: what was offered, answers by status, and the latency
(start of connect to the end of the answer) of the 200 answers, p50 / p90 / p99 / max in ms.

  shared_client.py --ports P1,P2,P3 --rate 130 --duration 10 --out FILE
"""
import argparse
import asyncio
import collections
import time

import util


async def one(port, counts, lat, timeout):
    writer = None
    t = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(b"GET /shared HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        parts = data.split(b"\r\n", 1)[0].split()
        status = parts[1].decode() if len(parts) > 1 else "bad"
        counts[status] += 1
        if status == "200":
            lat.append(time.monotonic() - t)
    except asyncio.CancelledError:
        counts["pending"] += 1
        raise
    except asyncio.TimeoutError:
        counts["timeout"] += 1
    except OSError:
        counts["error"] += 1
    finally:
        if writer is not None:
            writer.close()


def pct(sorted_vals, p):
    if not sorted_vals:
        return 0.0
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--grace", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ports = [int(p) for p in args.ports.split(",")]

    counts = collections.Counter()
    lat = []
    n, offered_s, late = await util.open_loop(
        args.rate, args.duration, args.grace,
        lambda i: one(ports[i % len(ports)], counts, lat, 3600))
    lat.sort()
    with open(args.out, "w") as f:
        util.write_offered(f, n, offered_s, late, counts)
        f.write("lat_n=%d\n" % len(lat))
        for p in (50, 90, 99):
            f.write("lat_p%d_ms=%.2f\n" % (p, pct(lat, p) * 1000))
        f.write("lat_max_ms=%.2f\n" % ((lat[-1] if lat else 0) * 1000))


if __name__ == "__main__":
    asyncio.run(main())
