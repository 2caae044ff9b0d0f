"""Rate accuracy from the upstream's arrival times (one time.monotonic_ns() a line).

  rate_analyze.py --arrivals FILE --rate R --burst B --start-s S --end-s E

Steady part: the arrivals from S to E seconds after the first one (the queue is never
empty then, so the limit alone sets the pace). Achieved rate there = (n - 1) / (last -
first). The sliding-window maximum is the most arrivals in any window [t, t + w) over the
whole record, checked against the promise rate * w + burst. Prints key=value lines.
"""
import argparse
import bisect


def max_in_window(ts, w):
    best, j = 0, 0
    for i in range(len(ts)):
        j = max(j, i)
        while j < len(ts) and ts[j] - ts[i] < w:
            j += 1
        best = max(best, j - i)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arrivals", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--burst", type=int, required=True)
    ap.add_argument("--start-s", type=float, default=1.0)
    ap.add_argument("--end-s", type=float, default=9.5)
    a = ap.parse_args()

    with open(a.arrivals) as f:
        ts = sorted(int(x) / 1e9 for x in f if x.strip())
    print("arrivals=%d" % len(ts))
    if len(ts) < 3:
        print("achieved_rate=0\nrate_error_pct=100\nmax_1s=0\nmax_100ms=0")
        return
    lo = bisect.bisect_left(ts, ts[0] + a.start_s)
    hi = bisect.bisect_right(ts, ts[0] + a.end_s)
    steady = ts[lo:hi]
    if len(steady) >= 2:
        achieved = (len(steady) - 1) / (steady[-1] - steady[0])
    else:
        achieved = 0.0
    gaps = [b - c for b, c in zip(steady[1:], steady)]
    gaps.sort()
    print("span_s=%.3f" % (ts[-1] - ts[0]))
    print("steady_n=%d" % len(steady))
    print("steady_s=%.3f" % ((steady[-1] - steady[0]) if len(steady) >= 2 else 0))
    print("achieved_rate=%.3f" % achieved)
    print("rate_error_pct=%.3f" % (100.0 * (achieved - a.rate) / a.rate))
    if gaps:
        print("gap_min_ms=%.3f" % (gaps[0] * 1000))
        print("gap_p50_ms=%.3f" % (gaps[len(gaps) // 2] * 1000))
        print("gap_max_ms=%.3f" % (gaps[-1] * 1000))
        print("gap_mean_ms=%.4f" % (sum(gaps) / len(gaps) * 1000))
    print("max_1s=%d" % max_in_window(ts, 1.0))
    print("bound_1s=%g" % (a.rate * 1.0 + a.burst))
    print("max_100ms=%d" % max_in_window(ts, 0.1))
    print("bound_100ms=%g" % (a.rate * 0.1 + a.burst))


if __name__ == "__main__":
    main()
