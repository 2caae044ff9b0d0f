#!/bin/sh
# Where sluice spends its time on the pass-through path, next to nginx: not part of
# `make bench`; needs perf (Debian's linux-perf). Same set-up as run.sh's throughput test
# (nginx upstream 'return 200', wrk -t2 -c64, proxy on CPU 0, load on CPU 1):
#   1. system calls per proxied request, nginx, sluice, and sluice with libevent's epoll
#      changelist (perf stat on the syscall tracepoints of the proxy process; requests
#      counted by the upstream's stub_status)
#   2. perf record (cpu-clock, DWARF call graphs) of sluice: the top functions by self
#      time, and by time including callees.
# Everything on 127.0.0.1, files in a mktemp dir, every process stopped at the end.
#   sh bench/profile.sh [SECONDS]        (default 5)
#   BENCH_KEEPALIVE=64 sh bench/profile.sh   (no upstream connection churn at -c64)
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
SECS=${1:-5}
KEEPALIVE=${BENCH_KEEPALIVE:-32}   # idle upstream connections kept by both proxies
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
command -v perf >/dev/null 2>&1 || { echo "profile: perf not found (apt-get install linux-perf)" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-profile.XXXXXX") || exit 1
PIDS=""
cleanup() {
  for p in $PIDS; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$(nproc)" -ge 2 ]; then ON_PROXY="taskset -c 0"; ON_LOAD="taskset -c 1"; else ON_PROXY=""; ON_LOAD=""; fi
set -- $("$PY" bench/util.py ports 4)
P_UP=$1 P_SL=$2 P_NG=$3 P_CL=$4

nginx_top() {
  mkdir -p "$TMP/$1"
  cat <<EOC
worker_processes 1; daemon off; pid $TMP/$1/nginx.pid; error_log $TMP/$1.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $TMP/$1/b; proxy_temp_path $TMP/$1/p; fastcgi_temp_path $TMP/$1/f;
  uwsgi_temp_path $TMP/$1/u; scgi_temp_path $TMP/$1/s;
EOC
}
{ nginx_top up; echo "server { listen 127.0.0.1:$P_UP backlog=4096; location / { return 200 \"ok\\n\"; }"
  echo "location = /stub { stub_status; } } }"; } >"$TMP/up.conf"
{ nginx_top proxy; echo "upstream up { server 127.0.0.1:$P_UP; keepalive $KEEPALIVE; keepalive_requests 1000000; }"
  echo "server { listen 127.0.0.1:$P_NG backlog=4096; location / { proxy_pass http://up;"
  echo "proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"; } >"$TMP/proxy.conf"
cat >"$TMP/sluice.yaml" <<EOC
listen:
  - address: 127.0.0.1:$P_SL
log_level: warn
drain_timeout: 1s
upstreams:
  up:
    url: http://127.0.0.1:$P_UP
    limits:
      - rate: 1000000/s
        burst: 1000000
    max_in_flight: 1024
    queue: { size: 100000, max_wait: 30s }
    keepalive: $KEEPALIVE
routes:
  - path_prefix: /
    strip_prefix: false
    upstream: up
EOC
$ON_LOAD nginx -c "$TMP/up.conf" 2>"$TMP/up.err" & PIDS="$! $PIDS"
$ON_PROXY nginx -c "$TMP/proxy.conf" 2>"$TMP/proxy.err" & NG_PID=$!; PIDS="$! $PIDS"
$ON_PROXY "$SLUICE" -c "$TMP/sluice.yaml" 2>"$TMP/sluice.err" & SL_PID=$!; PIDS="$! $PIDS"
# The same sluice with libevent's epoll "changelist" (set through libevent's environment
# variable): it merges the add/del of one fd within a loop turn into one epoll_ctl.
sed "s/127.0.0.1:$P_SL/127.0.0.1:$P_CL/" "$TMP/sluice.yaml" >"$TMP/sluice-cl.yaml"
EVENT_EPOLL_USE_CHANGELIST=1 $ON_PROXY "$SLUICE" -c "$TMP/sluice-cl.yaml" 2>"$TMP/sluice-cl.err" & CL_PID=$!; PIDS="$! $PIDS"
for p in $P_UP $P_NG $P_SL $P_CL; do "$PY" bench/util.py wait-port "$p" 10 || { echo "profile: port $p: nothing listens" >&2; exit 1; }; done
sleep 0.3
NG_WORKER=$(ps -o pid= --ppid "$NG_PID" | tr -d ' ' | head -n 1)

upstream_requests() { "$PY" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$P_UP/stub', timeout=5).read().decode().splitlines()[2].split()[2])"; }

# syscalls NAME PORT PID: syscalls of PID per request while wrk drives PORT
syscalls() {
  $ON_LOAD wrk -t2 -c64 -d2s "http://127.0.0.1:$2/" >/dev/null
  $ON_LOAD wrk -t2 -c64 -d"$((SECS + 2))s" "http://127.0.0.1:$2/" >"$TMP/wrk-$1.out" &
  w=$!
  sleep 1
  r0=$(upstream_requests)
  perf stat -x, -e 'syscalls:sys_enter_*' -p "$3" -o "$TMP/stat-$1.csv" -- sleep "$SECS" 2>/dev/null
  r1=$(upstream_requests)
  wait $w
  n=$((r1 - r0))
  echo "== $1: system calls per proxied request ($n requests in ${SECS}s, $(sed -n 's/Requests\/sec: *//p' "$TMP/wrk-$1.out") req/s over the wrk run)"
  awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); t += $1; printf "   %-18s %6.2f\n", $3, $1 / n }
                     END { printf "   %-18s %6.2f\n", "TOTAL", t / n }' "$TMP/stat-$1.csv" | sort -k2 -rn
}
syscalls nginx "$P_NG" "$NG_WORKER"
syscalls sluice "$P_SL" "$SL_PID"
syscalls sluice+EVENT_EPOLL_USE_CHANGELIST=1 "$P_CL" "$CL_PID"

echo "== sluice: perf record -g --call-graph dwarf, ${SECS}s under wrk"
$ON_LOAD wrk -t2 -c64 -d"$((SECS + 2))s" "http://127.0.0.1:$P_SL/" >"$TMP/wrk.out" &
w=$!
sleep 1
perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$SL_PID" -o "$TMP/perf.data" -- sleep "$SECS" 2>"$TMP/perf.err"
wait $w
perf report -i "$TMP/perf.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.8 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -n 40 >"$TMP/self.txt"
echo "-- self time by function (>= 0.8%)"
cat "$TMP/self.txt"
echo "-- self time by library"
perf report -i "$TMP/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 12
echo "-- including callees, user-space functions (>= 3%)"
perf report -i "$TMP/perf.data" --stdio --children --sort dso,symbol -g none --percent-limit 3 2>/dev/null |
  grep -v '^#' | grep -v '^$' | grep -v '\[k\]' | head -n 45
