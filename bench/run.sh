#!/bin/sh
# sluice benchmarks: `make bench` (or `sh bench/run.sh` once build/sluice is built).
# See bench/README.md for what is measured and how. Everything runs on 127.0.0.1, on
# ports chosen at run time, with temporary files in one mktemp directory, and every
# process started here is stopped on exit. Prints a summary table and writes it to
# build/bench/results.txt (the logs of the last run go to build/bench/logs/).
#
# Environment (all optional):
#   SLUICE_BIN       binary under test (build/sluice)
#   BENCH_DURATION   seconds of each wrk run (10)
#   BENCH_TLS_DURATION  seconds of each wrk run of the HTTPS-upstream section (6)
#   BENCH_WARMUP     seconds of the wrk warm-up before each measured run (2)
#   BENCH_ROUNDS     measured wrk runs of each proxy, alternating; the best is kept (2)
#   BENCH_KEEPALIVE  idle upstream connections kept by both proxies (32, as asked)
#   BENCH_RATE       the limit of the rate-accuracy test, per second (100)
#   BENCH_RATE_DURATION  seconds the rate-accuracy test offers load (20)
#   BENCH_MEM_N      requests held in the memory test (10000)
#   BENCH_PIN        1: proxy on CPU 0, wrk + upstream on CPU 1 (default when >= 2 CPUs); 0: no pinning
#   BENCH_STRICT     1: exit 1 when a goal is missed (default: report it, exit 0)
#   BENCH_TIMEOUT    seconds after which the whole run is aborted (240)
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SLUICE=${SLUICE_BIN:-$ROOT/build/sluice}
DUR=${BENCH_DURATION:-10}
TLS_DUR=${BENCH_TLS_DURATION:-6}
WARMUP=${BENCH_WARMUP:-2}
RATE=${BENCH_RATE:-100}
RATE_DUR=${BENCH_RATE_DURATION:-20}
MEM_N=${BENCH_MEM_N:-10000}
STRICT=${BENCH_STRICT:-0}
ROUNDS=${BENCH_ROUNDS:-2}
KEEPALIVE=${BENCH_KEEPALIVE:-32}
TIMEOUT=${BENCH_TIMEOUT:-240}
OUTDIR=$ROOT/build/bench
# Debian's interpreter (the first python3 on PATH may be another build); stdlib only.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
B=$ROOT/bench

die() { echo "bench: $*" >&2; exit 1; }
for tool in wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (make deps-bench installs it)"
done
[ -x "$SLUICE" ] || die "$SLUICE not found (make build/sluice)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX") || die "mktemp failed"
NAME=bench
LOGDIR=$OUTDIR/logs
. "$B/proc.sh"

# ------------------------------------------------------------------ helpers
cpu_of() { "$PY" "$B/util.py" cpu "$@"; }
rss_of() { "$PY" "$B/util.py" rss "$1"; }
getkv() { sed -n "s/^$2=//p" "$TMP/$1.kv" 2>/dev/null | tail -n 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ------------------------------------------------------------------ environment
ulimit -n "$(ulimit -H -n)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ $((MEM_N + 200)) -gt "$NOFILE" ]; then
  MEM_N=$((NOFILE - 200))
  echo "bench: open-file limit $NOFILE: memory test holds $MEM_N requests" >&2
fi
# At 1/s the last of MEM_N queued requests waits MEM_N seconds: max_wait must exceed that,
# or admission refuses the tail as "deadline" (a 1h max_wait admits only 3600).
MEM_WAIT=$((MEM_N / 3600 + 2))h
if [ "$PIN" = 1 ]; then
  PINNING="proxy under test on CPU 0; wrk, upstream and Python clients on CPU 1"
else
  PINNING="none"
fi

# Other work on the machine skews every figure: wait up to 15 s for a quiet second (under
# 15% busy), then go on anyway, saying so. Each wrk run also reports the CPU used by others.
fg "$PY" "$B/util.py" quiet "${BENCH_QUIET_WAIT:-15}" 15 >"$TMP/busy.out"
BUSY=$(cat "$TMP/busy.out")
[ "${BUSY:-0}" -ge 15 ] && echo "bench: the machine is already ${BUSY}% busy before the bench starts: figures will be disturbed" >&2

set -- $("$PY" "$B/util.py" ports 11)
P_UP=$1 P_NGINX=$2 P_SLUICE=$3 P_RUP=$4 P_RSL=$5 P_MUP=$6 P_MSL=$7
P_UPT=$8 P_UPT_STUB=$9 P_NGINXT=${10} P_SLUICET=${11}

{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- proxy limiter conf 2>/dev/null || echo '+dirty')"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "ncpu=$NCPU"
  echo "pinning=$PINNING"
  echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "wrk=$(wrk -v 2>&1 | head -n 1 | awk '{print $1" "$2}')"
  echo "libevent=$(pkg-config --modversion libevent 2>/dev/null || echo '?')"
  echo "duration=$DUR"
  echo "tls_duration=$TLS_DUR"
  echo "openssl=$(openssl version 2>/dev/null | awk '{print $2}')"
  echo "rounds=$ROUNDS"
  echo "keepalive=$KEEPALIVE"
  echo "busy_before_pct=$BUSY"
  echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "warmup=$WARMUP"
} >"$TMP/meta.kv"

# ------------------------------------------------------------------ configurations
nginx_common() {  # nginx_common NAME: the top of an nginx.conf whose files stay in $TMP
  mkdir -p "$TMP/$1"
  cat <<EOC
worker_processes 1;
daemon off;
master_process on;
pid $TMP/$1/nginx.pid;
error_log $TMP/$1.err warn;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/$1/body;
  proxy_temp_path $TMP/$1/proxy;
  fastcgi_temp_path $TMP/$1/fastcgi;
  uwsgi_temp_path $TMP/$1/uwsgi;
  scgi_temp_path $TMP/$1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
EOC
}

{ nginx_common nginx-up; cat <<EOC
  server {
    listen 127.0.0.1:$P_UP backlog=4096;
    location / { return 200 "ok\n"; }
    location = /stub { stub_status; }
  }
}
EOC
} >"$TMP/nginx-up.conf"

{ nginx_common nginx-proxy; cat <<EOC
  upstream up {
    server 127.0.0.1:$P_UP;
    keepalive $KEEPALIVE;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$P_NGINX backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOC
} >"$TMP/nginx-proxy.conf"

sluice_conf() {  # sluice_conf PORT URL RATE BURST MAX_IN_FLIGHT QSIZE MAX_WAIT [TLS]
  cat <<EOC
listen:
  - address: 127.0.0.1:$1
log_level: warn
drain_timeout: 1s
client: { max_connections: 20000, timeout: 60s }
upstreams:
  up:
    url: $2
    limits:
      - rate: $3
        burst: $4
    max_in_flight: $5
    queue: { size: $6, max_wait: $7 }
    keepalive: $KEEPALIVE
EOC
  [ -n "${8:-}" ] && echo "    tls: $8"
  cat <<EOC
routes:
  - path_prefix: /
    strip_prefix: false
    upstream: up
EOC
}
sluice_conf "$P_SLUICE" "http://127.0.0.1:$P_UP" 1000000/s 1000000 1024 100000 30s >"$TMP/sluice-throughput.yaml"
sluice_conf "$P_RSL" "http://127.0.0.1:$P_RUP" "$RATE/s" 1 64 100000 60s >"$TMP/sluice-rate.yaml"
sluice_conf "$P_MSL" "http://127.0.0.1:$P_MUP" 1/s 1 64 20000 "$MEM_WAIT" >"$TMP/sluice-mem.yaml"
for f in throughput rate mem; do
  "$SLUICE" -t -c "$TMP/sluice-$f.yaml" >/dev/null 2>"$TMP/check-$f.err" ||
    { cat "$TMP/check-$f.err" >&2; die "sluice refuses the $f configuration"; }
done
nginx -t -q -c "$TMP/nginx-up.conf" 2>"$TMP/check-nginx.err" || { cat "$TMP/check-nginx.err" >&2; die "nginx -t failed"; }

# --- HTTPS upstream (section 2): a test CA and a server certificate for DNS:localhost and
# IP:127.0.0.1 signed by it, made now (RSA 2048, the common case), in $TMP/tls.
TLS_OK=1
make_certs() {
  d=$TMP/tls
  mkdir -p "$d" || return 1
  printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature, keyEncipherment" \
      "extendedKeyUsage = serverAuth" "subjectAltName = DNS:localhost, IP:127.0.0.1" >"$d/server.ext"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 \
      -subj "/CN=sluice bench test CA" -addext "basicConstraints = critical, CA:TRUE" \
      -addext "keyUsage = critical, keyCertSign, cRLSign" &&
  openssl req -newkey rsa:2048 -nodes -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" &&
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 2 -extfile "$d/server.ext" -out "$d/server.pem" &&
  openssl verify -CAfile "$d/ca.pem" "$d/server.pem"
}
if ! command -v openssl >/dev/null 2>&1; then
  echo "bench: no openssl command (Debian's openssl package): the HTTPS-upstream section is skipped" >&2
  TLS_OK=0; FAILED=1
elif ! make_certs >"$TMP/openssl.out" 2>"$TMP/openssl.err"; then
  cat "$TMP/openssl.err" >&2
  echo "bench: making the test certificates failed: the HTTPS-upstream section is skipped" >&2
  TLS_OK=0; FAILED=1
fi

# The HTTPS upstream: TLS on P_UPT; stub_status on a plain listener of the same nginx
# (its counters cover both). One line per new TLS connection, written at its first request
# ($connection_requests = 1): protocol and whether the session was resumed, so the
# handshakes can be told apart (full or resumed) per run. TLS 1.2 and 1.3 on both sides
# (nginx 1.22's defaults stop at 1.2; 1.23.4+ and sluice offer 1.3), so both negotiate 1.3.
{ nginx_common nginx-up-tls; cat <<EOC
  map \$connection_requests \$first_on_conn { 1 1; default 0; }
  log_format handshake '\$ssl_protocol \$ssl_session_reused';
  ssl_session_cache shared:up_tls:4m;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$P_UPT ssl backlog=4096;
    ssl_certificate $TMP/tls/server.pem;
    ssl_certificate_key $TMP/tls/server.key;
    access_log $TMP/up-tls-handshakes.log handshake if=\$first_on_conn;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$P_UPT_STUB;
    location = /stub { stub_status; }
  }
}
EOC
} >"$TMP/nginx-up-tls.conf"

{ nginx_common nginx-proxy-tls; cat <<EOC
  upstream up_tls {
    server 127.0.0.1:$P_UPT;
    keepalive $KEEPALIVE;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$P_NGINXT backlog=4096;
    location / {
      proxy_pass https://up_tls;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $TMP/tls/ca.pem;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
    }
  }
}
EOC
} >"$TMP/nginx-proxy-tls.conf"

sluice_conf "$P_SLUICET" "https://127.0.0.1:$P_UPT" 1000000/s 1000000 1024 100000 30s \
    "{ ca_file: $TMP/tls/ca.pem, server_name: localhost }" >"$TMP/sluice-tls.yaml"
if [ "$TLS_OK" = 1 ]; then
  for f in nginx-up-tls nginx-proxy-tls; do
    nginx -t -q -c "$TMP/$f.conf" 2>"$TMP/check-$f.err" || { cat "$TMP/check-$f.err" >&2; die "nginx -t failed for $f"; }
  done
  "$SLUICE" -t -c "$TMP/sluice-tls.yaml" >/dev/null 2>"$TMP/check-tls.err" ||
    { cat "$TMP/check-tls.err" >&2; die "sluice refuses the tls configuration"; }
fi

# ------------------------------------------------------------------ 1. throughput
# bench_proxy NAME PORT PID SECS: warm up, then the measured wrk run; to NAME.kv go wrk's
# figures, the CPU used by PID and its children (nginx's worker) and by the upstream, and
# how many connections the upstream accepted, all over the measured run. The upstream is
# UP_PID, its stub_status on STUB_PORT; with HS_LOG set (the HTTPS upstream's log of new TLS
# connections), the handshakes of the run, full and resumed, are counted from it too.
# SCHEME: http or https (wrk straight to the HTTPS upstream).
STUB_PORT="" HS_LOG="" SCHEME=http
bench_proxy() {
  name=$1 port=$2 pid=$3 secs=$4
  echo "== throughput: $name (wrk -t2 -c64 -d${secs}s --latency, warm-up ${WARMUP}s)" >&2
  fg $ON_LOAD wrk -t2 -c64 -d"${WARMUP}s" "$SCHEME://127.0.0.1:$port/" >"$TMP/wrk-$name-warmup.out" 2>&1
  pids=""
  [ -n "$pid" ] && pids="$pid $(ps -o pid= --ppid "$pid" 2>/dev/null | tr '\n' ' ')"
  uppids="$UP_PID $(ps -o pid= --ppid "$UP_PID" 2>/dev/null | tr '\n' ' ')"
  a0=$("$PY" "$B/util.py" accepts "$STUB_PORT" 2>/dev/null)
  [ -n "$HS_LOG" ] && h0=$(wc -l <"$HS_LOG")
  c0=$(cpu_of $pids); u0=$(cpu_of $uppids); s0=$("$PY" "$B/util.py" sysbusy); t0=$(now)
  fg env WRK_REPORT="$TMP/$name.kv" $ON_LOAD "$PY" "$B/util.py" cpurun "$TMP/wrk-$name.cpu" \
      wrk -t2 -c64 -d"${secs}s" --latency -s "$B/report.lua" "$SCHEME://127.0.0.1:$port/" >"$TMP/wrk-$name.out" 2>&1
  t1=$(now); c1=$(cpu_of $pids); u1=$(cpu_of $uppids); s1=$("$PY" "$B/util.py" sysbusy)
  a1=$("$PY" "$B/util.py" accepts "$STUB_PORT" 2>/dev/null)
  if [ -n "$HS_LOG" ]; then
    # lines h0+1..h1: "PROTOCOL r" (resumed) or "PROTOCOL ." (full handshake)
    h1=$(wc -l <"$HS_LOG")
    { [ "$h1" -gt "$h0" ] && sed -n "$((h0 + 1)),${h1}p" "$HS_LOG"; } | awk '
      { n++; if ($2 == "r") r++; p[$1]++ }
      END { printf "handshakes=%d\nhandshakes_resumed=%d\n", n, r
            s = ""; for (k in p) s = s (s == "" ? "" : ",") k ":" p[k]; printf "tls_protocols=%s\n", s }' >>"$TMP/$name.kv"
  fi
  sed -n '/Latency Distribution/,/requests in/p' "$TMP/wrk-$name.out" | sed 's/^/   /' >&2
  t=$(elapsed "$t0" "$t1")
  kv "$name" proxy_cpu_pct "$(awk -v a="$c0" -v b="$c1" -v t="$t" 'BEGIN { printf "%.0f", 100 * (b - a) / t }')"
  kv "$name" upstream_cpu_pct "$(awk -v a="$u0" -v b="$u1" -v t="$t" 'BEGIN { printf "%.0f", 100 * (b - a) / t }')"
  # CPU used on the machine by anything but the proxy, the upstream and wrk (other work
  # disturbs the figures), and CPU stolen by the hypervisor; in % of one CPU.
  kv "$name" other_cpu_pct "$(echo "$s0 $s1" | awk -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" \
      -v u="$(awk -v a="$u0" -v b="$u1" 'BEGIN{print b-a}')" -v w="$(cat "$TMP/wrk-$name.cpu" 2>/dev/null || echo 0)" -v t="$t" \
      '{ o = ($3 - $1) - c - u - w; if (o < 0) o = 0; printf "%.0f", 100 * o / t }')"
  kv "$name" steal_pct "$(echo "$s0 $s1" | awk -v t="$t" '{ printf "%.0f", 100 * ($4 - $2) / t }')"
  # minus 1: the stub_status request itself
  kv "$name" upstream_conns "$(awk -v a="${a0:-0}" -v b="${a1:-0}" 'BEGIN { print b - a - 1 }')"
  non2xx=$(sed -n 's/.*Non-2xx or 3xx responses: *//p' "$TMP/wrk-$name.out")
  kv "$name" non2xx "${non2xx:-0}"
  [ -s "$TMP/$name.kv" ] && grep -q '^rps=' "$TMP/$name.kv" || { echo "bench: wrk produced no report for $name" >&2; FAILED=1; }
}

# bench_rounds PREFIX SECS NGINX_PID NGINX_NAME NGINX_PORT SLUICE_PID SLUICE_NAME SLUICE_PORT:
# ROUNDS measured runs of each proxy, named PREFIXnginx-rN and PREFIXsluice-rN. Rounds
# alternate the order (nginx first, then sluice first, ...) so that a drift in the
# machine's speed does not favour one of them; the summary keeps each one's best.
bench_rounds() {
  pre=$1 rsecs=$2 npid=$3 nname=$4 nport=$5 spid=$6 sname=$7 sport=$8
  r=1
  while [ $r -le "$ROUNDS" ]; do
    if [ $((r % 2)) = 1 ]; then order="nginx sluice"; else order="sluice nginx"; fi
    for who in $order; do
      if [ "$who" = nginx ]; then
        alive "$npid" "$nname" && bench_proxy "${pre}nginx-r$r" "$nport" "$npid" "$rsecs"
      else
        alive "$spid" "$sname" && bench_proxy "${pre}sluice-r$r" "$sport" "$spid" "$rsecs"
      fi
    done
    r=$((r + 1))
  done
  alive "$spid" "$sname" && kv "${pre}sluice-r1" rss_kib "$(rss_of "$spid")"
}

start nginx-up $ON_LOAD nginx -c "$TMP/nginx-up.conf"
UP_PID=$LAST
STUB_PORT=$P_UP
wait_port "$P_UP" nginx-up || die "the nginx upstream did not start"

# The ceiling of this set-up: wrk straight to the upstream, on the same CPU as in the
# proxied runs. Through a proxy, wrk and the upstream do the same work per request, so
# no proxy can be measured above this figure: a proxy near it is limited by the load side.
bench_proxy direct "$P_UP" "" 5

start nginx-proxy $ON_PROXY nginx -c "$TMP/nginx-proxy.conf"
NGINX_PID=$LAST
start sluice-throughput $ON_PROXY "$SLUICE" -c "$TMP/sluice-throughput.yaml"
SLUICE_PID=$LAST
if wait_port "$P_NGINX" nginx-proxy && wait_port "$P_SLUICE" sluice-throughput; then
  bench_rounds "" "$DUR" "$NGINX_PID" nginx-proxy "$P_NGINX" "$SLUICE_PID" sluice-throughput "$P_SLUICE"
fi
stop_pid "$NGINX_PID"
stop_pid "$SLUICE_PID"
stop_pid "$UP_PID"

# ------------------------------------------------------------------ 2. HTTPS upstream
# The same load and pinning, to an nginx serving TLS (certificate of the test CA); both
# proxies verify it (CA file, name localhost, SNI) and keep 32 idle connections to it.
# The handshakes the upstream accepted during each run show whether connections are
# reused (a handshake per request would be a bug).
if [ "$TLS_OK" = 1 ]; then
  : >"$TMP/up-tls-handshakes.log"
  start nginx-up-tls $ON_LOAD nginx -c "$TMP/nginx-up-tls.conf"
  UP_PID=$LAST
  STUB_PORT=$P_UPT_STUB HS_LOG=$TMP/up-tls-handshakes.log
  if wait_port "$P_UPT" nginx-up-tls && wait_port "$P_UPT_STUB" nginx-up-tls; then
    # the ceiling: wrk straight to the HTTPS upstream (64 handshakes, then keep-alive)
    SCHEME=https
    bench_proxy tls-direct "$P_UPT" "" 5
    SCHEME=http
    start nginx-proxy-tls $ON_PROXY nginx -c "$TMP/nginx-proxy-tls.conf"
    NGINX_PID=$LAST
    start sluice-tls $ON_PROXY "$SLUICE" -c "$TMP/sluice-tls.yaml"
    SLUICE_PID=$LAST
    if wait_port "$P_NGINXT" nginx-proxy-tls && wait_port "$P_SLUICET" sluice-tls; then
      bench_rounds tls- "$TLS_DUR" "$NGINX_PID" nginx-proxy-tls "$P_NGINXT" "$SLUICE_PID" sluice-tls "$P_SLUICET"
    fi
    stop_pid "$NGINX_PID"
    stop_pid "$SLUICE_PID"
  fi
  stop_pid "$UP_PID"
  STUB_PORT="" HS_LOG=""
fi

# ------------------------------------------------------------------ 3. rate accuracy
OFFER=$((RATE * 3))
echo "== rate accuracy: limit $RATE/s burst 1, offered $OFFER/s for ${RATE_DUR}s" >&2
start rate-upstream $ON_LOAD "$PY" "$B/upstream.py" --port "$P_RUP" --out "$TMP/rate-arrivals.txt"
RUP_PID=$LAST
start sluice-rate $ON_PROXY "$SLUICE" -c "$TMP/sluice-rate.yaml"
RSL_PID=$LAST
if wait_port "$P_RUP" rate-upstream && wait_port "$P_RSL" sluice-rate; then
  fg $ON_LOAD "$PY" "$B/rate_client.py" --port "$P_RSL" --rate "$OFFER" --duration "$RATE_DUR" \
      --out "$TMP/rate-client.kv" 2>"$TMP/rate-client.err"
  alive "$RSL_PID" sluice-rate
  stop_pid "$RSL_PID"
  stop_pid "$RUP_PID"
  "$PY" "$B/rate_analyze.py" --arrivals "$TMP/rate-arrivals.txt" --rate "$RATE" --burst 1 \
      --start-s 1 --end-s "$(awk -v d="$RATE_DUR" 'BEGIN { print d - 0.5 }')" >"$TMP/rate.kv"
  cat "$TMP/rate-client.kv" >>"$TMP/rate.kv"
  kv rate limit "$RATE"
  kv rate burst 1
  kv rate offered_target "$OFFER"
fi
stop_pid "$RSL_PID"
stop_pid "$RUP_PID"

# ------------------------------------------------------------------ 4. memory
echo "== memory: $MEM_N requests held in the queue (rate 1/s, max_wait $MEM_WAIT)" >&2
start mem-upstream $ON_LOAD "$PY" "$B/upstream.py" --port "$P_MUP" --out "$TMP/mem-arrivals.txt"
MUP_PID=$LAST
start sluice-mem $ON_PROXY "$SLUICE" -c "$TMP/sluice-mem.yaml"
MSL_PID=$LAST
if wait_port "$P_MUP" mem-upstream && wait_port "$P_MSL" sluice-mem; then
  sleep 0.5
  before=$(rss_of "$MSL_PID")
  kv mem n "$MEM_N"
  kv mem max_wait "$MEM_WAIT"
  kv mem rss_before_kib "$before"
  start mem-clients $ON_LOAD "$PY" "$B/mem_clients.py" --port "$P_MSL" --n "$MEM_N" --status "$TMP/mem-clients.kv"
  MC_PID=$LAST
  # Until every request is sent, then until RSS has not moved for 2 s (8 polls), 60 s at most.
  prev=-1 same=0 i=0 after=""
  while [ $i -lt 240 ]; do
    sleep 0.25; i=$((i + 1))
    alive "$MSL_PID" sluice-mem || break
    alive "$MC_PID" mem-clients || break
    sent=$(getkv mem-clients sent); errs=$(getkv mem-clients errors)
    cur=$(rss_of "$MSL_PID")
    if [ "${sent:-0}" -ge "$MEM_N" ] && [ "$cur" = "$prev" ]; then
      same=$((same + 1))
      [ $same -ge 8 ] && { after=$cur; break; }
    else
      same=0
    fi
    prev=$cur
  done
  [ -z "$after" ] && { echo "bench: memory test: sent ${sent:-0}/$MEM_N, errors ${errs:-0}; RSS never settled (last $prev KiB)" >&2; FAILED=1; after=$prev; }
  kv mem rss_after_kib "$after"
  kv mem settle_s "$(awk -v i="$i" 'BEGIN { printf "%.2f", i * 0.25 }')"
  kv mem sluice_fds "$(ls "/proc/$MSL_PID/fd" 2>/dev/null | wc -l)"
  kv mem upstream_seen "$(wc -l <"$TMP/mem-arrivals.txt")"
  for k in connected sent answered errors; do kv mem "clients_$k" "$(getkv mem-clients $k)"; done
  grep '^status_' "$TMP/mem-clients.kv" >>"$TMP/mem.kv"
  stop_pid "$MC_PID"
  alive "$MSL_PID" sluice-mem
fi
stop_pid "$MSL_PID"
stop_pid "$MUP_PID"

# ------------------------------------------------------------------ summary
mkdir -p "$OUTDIR"
"$PY" "$B/summary.py" "$TMP" >"$TMP/results.txt"; rc=$?
[ $rc -eq 2 ] && FAILED=1
cp "$TMP/results.txt" "$OUTDIR/results.txt"
echo
cat "$OUTDIR/results.txt"
echo "(written to build/bench/results.txt; logs in build/bench/logs/)"
[ "$FAILED" = 1 ] && { echo "bench: some measurements failed (see above)" >&2; exit 1; }
[ $rc -eq 1 ] && [ "$STRICT" = 1 ] && exit 1
exit 0
