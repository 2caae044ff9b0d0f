"""Summary table of one bench run: summary.py TMPDIR (reads the *.kv files run.sh wrote).

Exit status: 0 every goal met, 1 some goal missed, 2 some measurement missing.
"""
import os
import sys

DISTURBED_PCT = 10


def load(d, name):
    out = {}
    try:
        with open(os.path.join(d, name + ".kv")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    out[k] = v
    except OSError:
        pass
    return out


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def throughput_table(d, meta, p, prefix, goals):
    """The table of one proxy-vs-proxy section (runs PREFIXdirect, PREFIXnginx-rN,
    PREFIXsluice-rN) and the sluice/nginx ratios of the best runs. With goals, the ratios
    are checked against the goals (>= 0.8x throughput, <= 1.5x p99); without (the HTTPS
    section), they are reported only, and the upstream's TLS handshakes are shown as well.
    Returns (missing, missed)."""
    missing = False
    missed = []
    tls = prefix == "tls-"
    head = "   %-10s %9s %8s %8s %8s %8s %6s %8s %6s %9s %9s" % (
        "run", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "proxyCPU",
        "upCPU", "req/CPU-s", "handshakes" if tls else "up conns")
    if tls:
        head += " %8s %9s" % ("resumed", "req/conn")
    p(head + " %6s" % "other")
    rounds = int(meta.get("rounds", "1") or 1)
    runs = [("direct", load(d, prefix + "direct"))]
    for r in range(1, rounds + 1):
        for name in ("nginx", "sluice"):
            runs.append(("%s-r%d" % (name, r), load(d, "%s%s-r%d" % (prefix, name, r))))
    best = {}
    for name, r in runs:
        if num(r, "rps") is None:
            p("   %-10s (no result)" % name)
            if name != "direct" or tls:
                missing = True
            continue
        errs = sum(int(num(r, k) or 0) for k in ("err_connect", "err_read", "err_write", "err_timeout")) \
            + int(num(r, "non2xx") or 0)
        is_direct = name == "direct"
        cpu = num(r, "proxy_cpu_pct")
        other = (num(r, "other_cpu_pct") or 0) + (num(r, "steal_pct") or 0)
        disturbed = other > DISTURBED_PCT
        line = "   %-10s %9.0f %8.3f %8.3f %8.3f %8.2f %6d %8s %6s %9s %9s" % (
            name, num(r, "rps"), num(r, "lat_p50_us") / 1000, num(r, "lat_p90_us") / 1000,
            num(r, "lat_p99_us") / 1000, num(r, "lat_max_us") / 1000, errs,
            "-" if is_direct else "%d%%" % cpu, r.get("upstream_cpu_pct", "?") + "%",
            "-" if is_direct or not cpu else "%.0f" % (num(r, "rps") * 100 / cpu),
            r.get("upstream_conns", "?"))
        if tls:
            conns = num(r, "upstream_conns")
            line += " %8s %9s" % (
                r.get("handshakes_resumed", "?"),
                "%.0f" % (num(r, "requests") / conns) if conns and num(r, "requests") else "-")
        p(line + " %5d%%%s" % (other, " disturbed" if disturbed else ""))
        pname = prefix + name
        if errs:
            p("   !! %s: %d errors or non-2xx answers (see build/bench/logs/wrk-%s.out)" % (pname, errs, pname))
            missing = True
        if not is_direct:
            # the best run of each proxy: undisturbed before disturbed, then by req/s
            who = name.split("-")[0]
            key = (not disturbed, num(r, "rps"))
            if who not in best or key > best[who][2]:
                best[who] = (name, r, key)
    p("   direct = wrk straight to the upstream, the ceiling of this set-up; proxyCPU/upCPU ="
      " CPU used by the proxy / the upstream")
    if tls:
        p("   (100% = one CPU); req/CPU-s = req/s per CPU-second of the proxy; handshakes = TLS"
          " connections the upstream accepted")
        p("   during the run (resumed: of those, by session resumption); req/conn = requests per"
          " upstream connection;")
    else:
        p("   (100% = one CPU); req/CPU-s = req/s per CPU-second of the proxy; up conns = connections"
          " the upstream accepted;")
    p("   other = CPU used by other processes + stolen by the hypervisor during the run (over %d%%:"
      " disturbed)" % DISTURBED_PCT)
    if any(v[2][0] is False for v in best.values()):
        p("   !! every run of %s was disturbed by other work on the machine: its figures are not"
          " reliable" % " and ".join(k for k, v in best.items() if v[2][0] is False))
    if "nginx" in best and "sluice" in best:
        (nn, ng, _), (sn, sl, _) = best["nginx"], best["sluice"]
        tr = num(sl, "rps") / num(ng, "rps")
        lr = num(sl, "lat_p99_us") / max(num(ng, "lat_p99_us"), 1)
        p("   best runs: nginx %s %.0f req/s p99 %.3f ms; sluice %s %.0f req/s p99 %.3f ms" % (
            nn, num(ng, "rps"), num(ng, "lat_p99_us") / 1000, sn, num(sl, "rps"),
            num(sl, "lat_p99_us") / 1000))
        if goals:
            p("   sluice/nginx: throughput %.2fx (goal >= 0.80x: %s), p99 %.2fx (goal <= 1.50x: %s)"
              % (tr, verdict(tr >= 0.8), lr, verdict(lr <= 1.5)))
            if tr < 0.8:
                missed.append("throughput")
            if lr > 1.5:
                missed.append("p99")
        else:
            p("   sluice/nginx: throughput %.2fx, p99 %.2fx" % (tr, lr))
        if num(ng, "proxy_cpu_pct") and num(sl, "proxy_cpu_pct"):
            e = (num(sl, "rps") / num(sl, "proxy_cpu_pct")) / (num(ng, "rps") / num(ng, "proxy_cpu_pct"))
            p("   sluice/nginx requests per CPU-second of the proxy: %.2fx" % e)
            if num(ng, "proxy_cpu_pct") < 90:
                p("   note: nginx used %d%% of its CPU: its req/s was bounded by the load side"
                  " (wrk + upstream on one CPU), not by nginx" % num(ng, "proxy_cpu_pct"))
    if tls:
        # Connection reuse: a handshake per request would be a bug. Every sluice run must
        # carry many requests on each upstream TLS connection (here: at least 2 on average).
        for name, r in runs:
            if not name.startswith("sluice") or num(r, "rps") is None:
                continue
            conns, reqs = num(r, "upstream_conns"), num(r, "requests")
            if conns is None or not reqs:
                p("   !! %s: the upstream's connection count is missing" % name)
                missing = True
                continue
            per = reqs / max(conns, 1)
            if per < 2:
                p("   !! %s: %d requests over %d upstream TLS connections: no connection reuse"
                  % (name, reqs, conns))
                missed.append("tls-reuse")
        sl_runs = [(name, r) for name, r in runs if name.startswith("sluice") and num(r, "requests")]
        if sl_runs and "tls-reuse" not in missed:
            p("   sluice requests per upstream TLS handshake: %s (goal >= 2: met)" % ", ".join(
                "%s %.0f" % (name, num(r, "requests") / num(r, "upstream_conns"))
                if num(r, "upstream_conns") else "%s - (no new connection)" % name
                for name, r in sl_runs))
        protos = ["%s %s" % (name, r["tls_protocols"]) for name, r in runs if r.get("tls_protocols")]
        if protos:
            p("   protocols negotiated (handshakes): %s" % ", ".join(protos))
    sl1 = load(d, prefix + "sluice-r1")
    if num(sl1, "rss_kib"):
        p("   sluice VmRSS after the runs: %d KiB" % num(sl1, "rss_kib"))
    return missing, missed


def verdict(ok):
    return "met" if ok else "MISSED"


def main():
    d = sys.argv[1]
    meta, rate, mem = (load(d, n) for n in ("meta", "rate", "mem"))
    lines = []
    missing = False
    missed = []
    p = lines.append

    p("sluice bench  %s  commit %s" % (meta.get("date", "?"), meta.get("commit", "?")))
    p("machine: %s CPU(s), %s; %s; wrk %s; libevent %s"
      % (meta.get("ncpu", "?"), meta.get("cpu", "?"), "nginx " + meta.get("nginx", "?"),
         meta.get("wrk", "?"), meta.get("libevent", "?")))
    p("pinning: %s" % meta.get("pinning", "?"))
    busy = num(meta, "busy_before_pct")
    p("machine busy before the start: %s%% of all CPUs (load average %s)%s" % (
        meta.get("busy_before_pct", "?"), meta.get("loadavg", "?"),
        "  !! other work was running: every figure below is disturbed" if busy and busy > 15 else ""))
    p("")
    p("1. Pass-through: upstream = nginx 'return 200 \"ok\\n\"'; wrk -t2 -c64 -d%ss --latency, after a"
      " %ss warm-up; %s round(s), order alternating; upstream keepalive %s in both proxies"
      % (meta.get("duration", "?"), meta.get("warmup", "?"), meta.get("rounds", "?"),
         meta.get("keepalive", "?")))
    m, ms = throughput_table(d, meta, p, "", goals=True)
    missing |= m
    missed += ms
    p("")

    p("2. HTTPS upstream: the same upstream over TLS (nginx, RSA 2048 certificate of a test CA,"
      " OpenSSL %s); both proxies" % meta.get("openssl", "?"))
    p("   verify it (CA file, name localhost, SNI), HTTP/1.1 keep-alive, %s idle upstream"
      " connections kept; same load, pinning and rounds, -d%ss"
      % (meta.get("keepalive", "?"), meta.get("tls_duration", "?")))
    if not os.path.exists(os.path.join(d, "tls-direct.kv")) and not any(
            os.path.exists(os.path.join(d, "tls-%s-r1.kv" % w)) for w in ("nginx", "sluice")):
        p("   (no result: section skipped, see the messages above)")
        missing = True
    else:
        m, ms = throughput_table(d, meta, p, "tls-", goals=False)
        missing |= m
        missed += ms
    p("")

    p("3. Rate accuracy: limit %s/s burst %s, offered %s/s (open loop, one connection a request)"
      % (rate.get("limit", "?"), rate.get("burst", "?"), rate.get("offered_target", "?")))
    if num(rate, "achieved_rate") is None or num(rate, "arrivals") in (None, 0):
        p("   (no result)")
        missing = True
    else:
        err = num(rate, "rate_error_pct")
        ok_rate = abs(err) <= 0.5
        m1, b1 = num(rate, "max_1s"), num(rate, "bound_1s")
        m01, b01 = num(rate, "max_100ms"), num(rate, "bound_100ms")
        p("   offered: %s requests in %ss (%s/s); answers seen by the client before it hung up: %s"
          % (rate.get("offered", "?"), rate.get("offered_s", "?"), rate.get("offered_rate", "?"),
             ", ".join("%s %s" % (k[7:], v) for k, v in sorted(rate.items()) if k.startswith("status_"))))
        p("   upstream arrivals: %d over %.2fs; steady part: %d arrivals over %.3fs"
          % (num(rate, "arrivals"), num(rate, "span_s"), num(rate, "steady_n"), num(rate, "steady_s")))
        p("   achieved rate (steady part): %.3f/s, %+.3f%% of the limit (goal within 0.5%%: %s)"
          % (num(rate, "achieved_rate"), err, verdict(ok_rate)))
        p("   gaps between arrivals: min %.3f ms, median %.3f ms, mean %.3f ms, max %.3f ms"
          " (interval %.3f ms)" % (num(rate, "gap_min_ms"), num(rate, "gap_p50_ms"),
                                   num(rate, "gap_mean_ms"), num(rate, "gap_max_ms"),
                                   1000.0 / num(rate, "limit")))
        p("   max in any 1 s window: %d (bound rate+burst = %g: %s); in any 100 ms: %d (bound %g: %s)"
          % (m1, b1, verdict(m1 <= b1), m01, b01, verdict(m01 <= b01)))
        if not ok_rate:
            missed.append("rate")
        if m1 > b1 or m01 > b01:
            missed.append("window")
    p("")

    p("4. Memory: requests held in the queue (rate 1/s burst 1, queue 20000, max_wait %s)"
      % mem.get("max_wait", "?"))
    n, before, after = num(mem, "n"), num(mem, "rss_before_kib"), num(mem, "rss_after_kib")
    if not n or before is None or after is None:
        p("   (no result)")
        missing = True
    else:
        per = (after - before) / n
        p("   clients: %s connected, %s sent, %s answered (%s), %s errors; upstream saw %s;"
          " sluice fds %s" % (
              mem.get("clients_connected", "?"), mem.get("clients_sent", "?"),
              mem.get("clients_answered", "?"),
              ", ".join("%s %s" % (k[7:], v) for k, v in sorted(mem.items())
                        if k.startswith("status_")) or "-",
              mem.get("clients_errors", "?"), mem.get("upstream_seen", "?"),
              mem.get("sluice_fds", "?")))
        held = (num(mem, "clients_sent") or 0) - (num(mem, "clients_answered") or 0)
        if held < 0.95 * n:
            p("   !! only %d requests were held in the queue, not %d" % (held, n))
            missing = True
        p("   VmRSS before %d KiB, after %d KiB (settled after %ss): %.2f KiB per queued request"
          " (goal <= 4 KiB: %s)" % (before, after, mem.get("settle_s", "?"), per, verdict(per <= 4.0)))
        p("   (kernel socket buffers are not in RSS and are not counted)")
        if per > 4.0:
            missed.append("memory")
    p("")
    if missing:
        p("RESULT: some measurements missing or invalid")
    elif missed:
        p("RESULT: goals missed: " + ", ".join(missed))
    else:
        p("RESULT: all goals met")
    print("\n".join(lines))
    return 2 if missing else (1 if missed else 0)


if __name__ == "__main__":
    sys.exit(main())
