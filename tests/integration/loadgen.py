"""Open-loop load against one or more sluice daemons (asyncio, stdlib only), run as a
subprocess by redisutil's `loadgen` fixture so that the test process and its upstream
thread keep the GIL to themselves.

  loadgen.py --out FILE --t0 MONO [--timeout S] --target PORT,RATE,DURATION,TAG[,START]...

For each target, request j is started at t0 + START + j / RATE (CLOCK_MONOTONIC, the clock
of time.monotonic() in every process) for j < RATE * DURATION, whatever happened to the
earlier ones: GET /api/load?tag=TAG&i=j on a new connection with "Connection: close",
read to the end. FILE gets JSON {"t0", "late_max_s", "results": [{"tag", "i", "port",
"t_start", "t_done", "status", "reason", "queue_wait_ms", "error"}]} (status 0 and an
error text when no answer came; reason = Sluice-Reason).
"""
import argparse
import asyncio
import json
import resource
import time


def parse_head(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs


async def one(target, j, timeout, results):
    port, tag = target["port"], target["tag"]
    rec = {"tag": tag, "i": j, "port": port, "t_start": time.monotonic(), "t_done": None,
           "status": 0, "reason": None, "queue_wait_ms": None, "error": None}
    writer = None
    try:
        async def go():
            nonlocal writer
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(("GET /api/load?tag=%s&i=%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                          "Connection: close\r\n\r\n" % (tag, j, port)).encode())
            await writer.drain()
            return await reader.read()
        data = await asyncio.wait_for(go(), timeout)
        status, hdrs = parse_head(data)
        rec["status"] = status
        rec["reason"] = hdrs.get("sluice-reason")
        if "sluice-queue-wait" in hdrs:
            rec["queue_wait_ms"] = int(hdrs["sluice-queue-wait"])
    except Exception as e:  # recorded, never raised: every request gets a record
        rec["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        rec["t_done"] = time.monotonic()
        if writer is not None:
            writer.close()
        results.append(rec)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--t0", type=float, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--target", action="append", required=True)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    targets = []
    for spec in a.target:
        f = spec.split(",")
        targets.append({"port": int(f[0]), "rate": float(f[1]), "duration": float(f[2]),
                        "tag": f[3], "start": float(f[4]) if len(f) > 4 else 0.0})
    # one merged schedule of (due, target, j)
    sched = []
    for t in targets:
        n = int(round(t["rate"] * t["duration"]))
        sched += [(a.t0 + t["start"] + j / t["rate"], t, j) for j in range(n)]
    sched.sort(key=lambda x: x[0])

    results, tasks, late = [], [], 0.0
    for due, t, j in sched:
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        else:
            late = max(late, now - due)
        tasks.append(asyncio.ensure_future(one(t, j, a.timeout, results)))
    await asyncio.gather(*tasks)
    results.sort(key=lambda r: r["t_start"])
    with open(a.out, "w") as f:
        json.dump({"t0": a.t0, "late_max_s": late, "results": results}, f)


if __name__ == "__main__":
    asyncio.run(main())
