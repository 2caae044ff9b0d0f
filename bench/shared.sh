#!/bin/sh
# Shared budgets through Redis: `make bench-shared` (or `sh bench/shared.sh` once
# build/sluice is built). See bench/README.md, "Shared budgets". Three instances of the
# release build share one budget through Debian's redis-server; the same load then goes to
# one instance with a local limit at the same rate. Everything runs on 127.0.0.1, on ports
# chosen at run time, temporary files in one mktemp directory, every process started here
# is stopped on exit. Prints a table and writes it to build/bench/shared.txt (the logs of
# the last run go to build/bench/shared-logs/). About 90 s.
#
# Environment (all optional):
#   SLUICE_BIN              binary under test (build/sluice)
#   BENCH_SHARED_RATES      budgets to measure, per second ("100 5000")
#   BENCH_SHARED_DURATION   seconds each load runs (10)
#   BENCH_SHARED_OVER       offered load / budget of the open-loop runs (1.3)
#   BENCH_SHARED_WRK_FROM   budgets from this rate on are loaded with wrk (1000)
#   BENCH_SHARED_WRK_CONNS  connections of each of the three wrk processes (64)
#   BENCH_SHARED_LIGHT      1: also the added latency below the budget (0.5x, open loop,
#                           at the lowest rate) (1)
#   BENCH_SHARED_HORIZON    shared.horizon (500ms)
#   BENCH_PIN               1: the sluice instances on CPU 0, the rest on CPU 1 (default
#                           with >= 2 CPUs); 0: no pinning
#   BENCH_STRICT            1: exit 1 when a goal is missed
#   BENCH_TIMEOUT           seconds after which the run aborts itself (170)
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
RATES=${BENCH_SHARED_RATES:-100 5000}
DUR=${BENCH_SHARED_DURATION:-10}
OVER=${BENCH_SHARED_OVER:-1.3}
WRK_FROM=${BENCH_SHARED_WRK_FROM:-1000}
WRK_CONNS=${BENCH_SHARED_WRK_CONNS:-64}
LIGHT=${BENCH_SHARED_LIGHT:-1}
HORIZON=${BENCH_SHARED_HORIZON:-500ms}
STRICT=${BENCH_STRICT:-0}
TIMEOUT=${BENCH_TIMEOUT:-170}
N=3
OUTDIR=$ROOT/build/bench
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
B=$ROOT/bench
REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)

die() { echo "bench-shared: $*" >&2; exit 1; }
[ -x "$REDIS_SERVER" ] || die "redis-server not found (Debian's redis-server package)"
[ -x "$SLUICE" ] || die "$SLUICE not found (make build/sluice)"
need_wrk=0
for r in $RATES; do [ "$r" -ge "$WRK_FROM" ] && need_wrk=1; done
[ $need_wrk = 1 ] && ! command -v wrk >/dev/null 2>&1 && die "wrk not found (make deps-bench installs it)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-shared.XXXXXX") || die "mktemp failed"
NAME=bench-shared
LOGDIR=$OUTDIR/shared-logs
. "$B/proc.sh"

# ------------------------------------------------------------------ helpers
now() { "$PY" -c 'import time; print("%.6f" % time.monotonic())'; }

# ------------------------------------------------------------------ environment
ulimit -n "$(ulimit -H -n)" 2>/dev/null
if [ "$PIN" = 1 ]; then
  PINNING="sluice instances on CPU 0; Redis, upstream and clients on CPU 1"
else
  PINNING="none"
fi
fg "$PY" "$B/util.py" quiet "${BENCH_QUIET_WAIT:-10}" 15 >"$TMP/busy.out"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- proxy limiter conf 2>/dev/null || echo '+dirty')"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "ncpu=$NCPU"
  echo "pinning=$PINNING"
  echo "instances=$N"
  echo "redis=$("$REDIS_SERVER" --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  echo "duration=${DUR}s per run"
  echo "horizon=$HORIZON"
  echo "busy_before_pct=$(cat "$TMP/busy.out")"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
} >"$TMP/meta.kv"

# ------------------------------------------------------------------ configurations
# sluice_conf PORT ADMIN UPSTREAM_PORT RATE [REDIS_PORT INSTANCE]: shared when REDIS_PORT
sluice_conf() {
  cat <<EOC
listen:
  - address: 127.0.0.1:$1
admin:
  address: 127.0.0.1:$2
log_level: warn
drain_timeout: 1s
client: { max_connections: 20000, timeout: 60s }
EOC
  if [ -n "${5:-}" ]; then
    cat <<EOC
shared:
  redis: 127.0.0.1:$5
  horizon: $HORIZON
  instance: $6
EOC
  fi
  cat <<EOC
upstreams:
  up:
    url: http://127.0.0.1:$3
    limits:
      - rate: $4/s
        burst: 1
EOC
  [ -n "${5:-}" ] && echo "        shared: bench-budget"
  cat <<EOC
    max_in_flight: 256
    queue: { size: 100000, max_wait: 60s }
    keepalive: 256
routes:
  - path_prefix: /
    strip_prefix: false
    upstream: up
EOC
}

# ------------------------------------------------------------------ one run
# run_case SETUP RATE PHASE: SETUP shared (N instances + Redis) | local (one instance);
# PHASE sat (offered >= OVER x the budget) | light (0.5 x, open loop)
run_case() {
  setup=$1 rate=$2 phase=$3
  case_name=case-$phase-$rate-$setup
  echo "== $setup, budget $rate/s, $phase" >&2
  set -- $("$PY" "$B/util.py" ports 12)
  p_up=$1 p_redis=$2; shift 2
  ninst=$N; [ "$setup" = local ] && ninst=1
  kv "$case_name" setup "$setup"
  kv "$case_name" rate "$rate"
  kv "$case_name" phase "$phase"
  kv "$case_name" instances "$ninst"

  start "$case_name-upstream" $ON_LOAD "$PY" "$B/upstream.py" --port "$p_up" --out "$TMP/$case_name.arrivals"
  up_pid=$LAST
  redis_pid=""
  if [ "$setup" = shared ]; then
    mkdir -p "$TMP/redis-$case_name"
    start "$case_name-redis" $ON_LOAD "$REDIS_SERVER" --port "$p_redis" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$TMP/redis-$case_name" --logfile ""
    redis_pid=$LAST
    "$PY" "$B/shared_util.py" ping "$p_redis" 10 || { echo "bench-shared: redis-server did not answer" >&2; FAILED=1; }
  fi
  ports="" admins="" pids=""
  k=0
  while [ $k -lt $ninst ]; do
    p=$1 a=$2; shift 2
    conf=$TMP/$case_name-$k.yaml
    if [ "$setup" = shared ]; then
      sluice_conf "$p" "$a" "$p_up" "$rate" "$p_redis" "bench-$k" >"$conf"
    else
      sluice_conf "$p" "$a" "$p_up" "$rate" >"$conf"
    fi
    "$SLUICE" -t -c "$conf" >/dev/null 2>"$TMP/$case_name-check.err" ||
      { cat "$TMP/$case_name-check.err" >&2; die "sluice refuses $conf"; }
    start "$case_name-sluice$k" $ON_PROXY "$SLUICE" -c "$conf"
    pids="$pids $LAST"
    ports="$ports${ports:+,}$p"
    admins="$admins $a"
    k=$((k + 1))
  done
  ok=1
  wait_port "$p_up" upstream || ok=0
  for p in $(echo "$ports" | tr , ' '); do wait_port "$p" sluice || ok=0; done

  if [ $ok = 1 ]; then
    c0=0; [ -n "$redis_pid" ] && c0=$("$PY" "$B/shared_util.py" lease-calls "$p_redis")
    t0=$(now)
    if [ "$phase" = light ]; then
      offer=$(awk -v r="$rate" 'BEGIN { printf "%.1f", r * 0.5 }')
    else
      offer=$(awk -v r="$rate" -v o="$OVER" 'BEGIN { printf "%.1f", r * o }')
    fi
    if [ "$phase" = sat ] && [ "$rate" -ge "$WRK_FROM" ]; then
      # closed loop: 3 wrk processes of WRK_CONNS connections each (on the one instance
      # when local), every connection sending again as soon as it is answered: the queues
      # never run empty, so the budget alone sets the pace
      kv "$case_name" load "wrk 3x$WRK_CONNS conns (closed)"
      wpids="" j=0
      for p in $(echo "$ports" | tr , ' ') $(echo "$ports" | tr , ' ') $(echo "$ports" | tr , ' '); do
        [ $j -ge 3 ] && break
        WRK_REPORT=$TMP/wrk-$case_name-$j.kv
        export WRK_REPORT
        start "$case_name-wrk$j" $ON_LOAD wrk -t1 -c"$WRK_CONNS" -d"${DUR}s" --latency \
            -s "$B/report.lua" "http://127.0.0.1:$p/"
        wpids="$wpids $LAST"
        j=$((j + 1))
      done
      unset WRK_REPORT
      for w in $wpids; do wait "$w"; forget "$w"; done
      t1=$(now)
      cat "$TMP/wrk-$case_name"-*.kv >"$TMP/$case_name.wrk" 2>/dev/null
      # the median of the three wrk's p50, the largest of their p99
      sed -n 's/^lat_p50_us=//p' "$TMP/$case_name.wrk" | sort -n |
          awk '{ v[NR] = $1 } END { if (NR) printf "lat_p50_ms=%.2f\n", v[int((NR + 1) / 2)] / 1000 }' >>"$TMP/$case_name.kv"
      awk -F= '/^lat_p99_us=/ { if ($2 > m) m = $2 } END { printf "lat_p99_ms=%.2f\n", m / 1000 }' \
          "$TMP/$case_name.wrk" >>"$TMP/$case_name.kv"
      awk -F= '/^requests=/ { r += $2 } /^err_status=/ { s += $2 } /^err_(connect|read|write|timeout)=/ { e += $2 }
               END { printf "answered=%d\nnon200=%d\n", r, s + e }' "$TMP/$case_name.wrk" >>"$TMP/$case_name.kv"
    else
      kv "$case_name" load "open loop $offer/s ($(awk -v o="$offer" -v r="$rate" 'BEGIN { printf "%.1fx", o / r }'))"
      fg $ON_LOAD "$PY" "$B/shared_client.py" --ports "$ports" --rate "$offer" --duration "$DUR" \
          --out "$TMP/client-$case_name.kv" 2>"$TMP/$case_name-client.err"
      t1=$(now)
      grep -E '^(lat_|offered|max_late|status_)' "$TMP/client-$case_name.kv" >>"$TMP/$case_name.kv"
      awk -F= '/^status_/ && $1 != "status_200" && $1 != "status_pending" { s += $2 } END { printf "non200=%d\n", s }' \
          "$TMP/client-$case_name.kv" >>"$TMP/$case_name.kv"
    fi
    if [ -n "$redis_pid" ]; then
      c1=$("$PY" "$B/shared_util.py" lease-calls "$p_redis")
      kv "$case_name" lease_calls "$((c1 - c0))"
      kv "$case_name" lease_calls_per_s "$(awk -v a="$c0" -v b="$c1" -v x="$t0" -v y="$t1" 'BEGIN { printf "%.2f", (b - a) / (y - x) }')"
      "$PY" "$B/shared_util.py" metrics $admins >>"$TMP/$case_name.kv"
    fi
    k=0
    for p in $pids; do alive "$p" "$case_name-sluice$k"; k=$((k + 1)); done
  fi
  for p in $pids; do stop_pid "$p"; done
  stop_pid "$up_pid"
  [ -n "$redis_pid" ] && stop_pid "$redis_pid"
  end=$(awk -v d="$DUR" 'BEGIN { print d - 0.5 }')
  "$PY" "$B/rate_analyze.py" --arrivals "$TMP/$case_name.arrivals" --rate "$rate" --burst 1 \
      --start-s 1 --end-s "$end" >>"$TMP/$case_name.kv"
  # requests released per second over the load, for Redis calls per request
  awk -F= '/^steady_n=/ { n = $2 } /^steady_s=/ { s = $2 } END { if (s > 0) printf "released_per_s=%.2f\n", (n - 1) / s }' \
      "$TMP/$case_name.kv" >>"$TMP/$case_name.kv"
  rm -f "$TMP/$case_name.arrivals"
}

for r in $RATES; do
  run_case shared "$r" sat
  run_case local "$r" sat
done
if [ "$LIGHT" = 1 ]; then
  low=$(for r in $RATES; do echo "$r"; done | sort -n | head -n 1)
  run_case shared "$low" light
  run_case local "$low" light
fi

# ------------------------------------------------------------------ summary
mkdir -p "$OUTDIR"
"$PY" "$B/shared_report.py" "$TMP" >"$TMP/shared.txt"; rc=$?
[ $rc -eq 2 ] && FAILED=1
cp "$TMP/shared.txt" "$OUTDIR/shared.txt"
echo
cat "$OUTDIR/shared.txt"
echo "(written to build/bench/shared.txt; logs in build/bench/shared-logs/)"
[ "$FAILED" = 1 ] && { echo "bench-shared: some measurements failed (see above)" >&2; exit 1; }
[ $rc -eq 1 ] && [ "$STRICT" = 1 ] && exit 1
exit 0
