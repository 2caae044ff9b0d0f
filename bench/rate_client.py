"""Open-loop load at a fixed rate (asyncio, stdlib only), for the rate-accuracy bench.

Starts request i at t0 + i/RATE whatever happened to the earlier ones (so the offered
rate does not fall when sluice holds requests in its queue): each request is a GET on a
new connection ("Connection: close"). After DURATION seconds it stops offering, waits
GRACE seconds, closes every connection still waiting (sluice then withdraws those
requests from its queue) and writes a key=value summary to --out.

  rate_client.py --port PORT --rate 300 --duration 10 --out FILE
"""
import argparse
import asyncio
import collections

import util


async def one(port, counts, timeout):
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        writer.write(b"GET /rate HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        counts[parts[1].decode() if len(parts) > 1 else "bad"] += 1
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


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--grace", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    counts = collections.Counter()
    n, offered_s, late = await util.open_loop(args.rate, args.duration, args.grace,
                                              lambda i: one(args.port, counts, 3600))
    with open(args.out, "w") as f:
        util.write_offered(f, n, offered_s, late, counts)


if __name__ == "__main__":
    asyncio.run(main())
