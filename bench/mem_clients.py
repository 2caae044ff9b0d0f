"""Hold N requests open against sluice, for the memory bench (asyncio, stdlib only).

Opens N connections (at most --parallel connects at a time), sends one GET on each and
then just waits for the answer. Every --interval seconds it rewrites --status with
key=value lines (connected, sent, answered, errors). Runs until SIGTERM/SIGINT, then
closes every connection.

  mem_clients.py --port PORT --n 10000 --status FILE
"""
import argparse
import asyncio
import collections
import os
import resource
import signal

REQUEST = b"GET /mem HTTP/1.1\r\nHost: bench\r\n\r\n"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--status", required=True)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    c = collections.Counter()
    sem = asyncio.Semaphore(args.parallel)
    writers = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def one():
        try:
            async with sem:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", args.port), 10)
                writers.append(writer)
                c["connected"] += 1
                writer.write(REQUEST)
                await writer.drain()
                c["sent"] += 1
            line = await reader.readline()
            parts = line.split()
            c["answered"] += 1
            c["status_" + (parts[1].decode() if len(parts) > 1 else "closed")] += 1
        except asyncio.CancelledError:
            raise
        except (OSError, asyncio.TimeoutError):
            c["errors"] += 1

    def write_status():
        tmp = args.status + ".tmp"
        with open(tmp, "w") as f:
            f.write("target=%d\n" % args.n)
            for k in ("connected", "sent", "answered", "errors"):
                f.write("%s=%d\n" % (k, c[k]))
            for k, v in sorted(c.items()):
                if k.startswith("status_"):
                    f.write("%s=%d\n" % (k, v))
        os.replace(tmp, args.status)

    tasks = [asyncio.ensure_future(one()) for _ in range(args.n)]
    while not stop.is_set():
        write_status()
        try:
            await asyncio.wait_for(stop.wait(), args.interval)
        except asyncio.TimeoutError:
            pass
    write_status()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for w in writers:
        w.close()


if __name__ == "__main__":
    asyncio.run(main())
